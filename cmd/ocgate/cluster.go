package main

// Wiring of scale-out (redis_url): the shared state (protocol/cluster) with the server's callbacks — takeover,
// renewal conflicts, the local sessions to renew — and sealed cookies through the security module, which alone
// reads cookie_key_file.

import (
	"log/slog"
	"os"
	"sync/atomic"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/egress/secmod"
	"ocgate/protocol"
	"ocgate/protocol/cluster"
)

// sharedState is what openShared gives the server: the store (nil without redis_url), the sealer (nil without
// cookie_key_file) and start, which begins the store's background work once the server exists.
type sharedState struct {
	store  *cluster.Store
	sealer auth.CookieSealer
	srv    atomic.Pointer[protocol.Server]
}

// openShared opens the shared state of cfg. Redis being unreachable is not an error (the store starts degraded).
func openShared(cfg *config.Config, sm *secmod.Client, log *slog.Logger) (*sharedState, error) {
	sh := &sharedState{}
	if cfg.CookieKeyFile != "" {
		sh.sealer = secmodSealer{sm}
	}
	if cfg.RedisURL == "" {
		return sh, nil
	}
	pw, err := cluster.PasswordFromFile(cfg.RedisPasswordFile)
	if err != nil {
		return nil, err
	}
	inst := cfg.InstanceID
	if inst == "" {
		if inst, err = os.Hostname(); err != nil {
			return nil, err
		}
	}
	withSrv := func(f func(*protocol.Server)) {
		if s := sh.srv.Load(); s != nil {
			f(s)
		}
	}
	sh.store, err = cluster.Open(cluster.Options{
		URL: cfg.RedisURL, Password: pw, Instance: inst, Logger: log,
		// A session whose instance died can be taken over for as long as one waits for its client locally.
		TTL:        cfg.CookieTimeout + cluster.RenewPeriod(cfg.CookieTimeout),
		OnTakeover: func(sid, by string) { withSrv(func(s *protocol.Server) { s.OnTakeover(sid, by) }) },
		OnConflict: func(sid string) { withSrv(func(s *protocol.Server) { s.OnConflict(sid) }) },
		Owned: func() (o []cluster.Owned) {
			withSrv(func(s *protocol.Server) { o = s.Owned() })
			return o
		},
	})
	if err != nil {
		return nil, err
	}
	log.Info("shared state", "redis", cfg.RedisURL, "instance", inst, "healthy", sh.store.Healthy())
	return sh, nil
}

// start begins the store's background work (takeover messages, renewal, reconnection) for srv.
func (sh *sharedState) start(srv *protocol.Server) {
	if sh.store == nil {
		return
	}
	sh.srv.Store(srv)
	sh.store.Start()
}

// close stops the store (after the server).
func (sh *sharedState) close() {
	if sh.store != nil {
		sh.store.Close()
	}
}
