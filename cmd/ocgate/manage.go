package main

// Wiring of the management interfaces: the control socket's backend (the protocol.Server, plus reload, stop and
// the ban list), reload itself (SIGHUP and `ctl reload`), and the metrics listener.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/egress/secmod"
	"ocgate/netstack"
	"ocgate/protocol"
	"ocgate/protocol/ctl"
	"ocgate/protocol/metrics"
)

// liveKeys are the keys besides the per-session ones (config.PerSession) that a reload applies: the server reads
// them for each login or CONNECT, or this file swaps them in (auth, certificate).
var liveKeys = []string{"banner", "pre_login_banner", "default_domain", "split_dns", "tunnel_all_dns", "auth",
	"enable_auth", "crl", "cert_user_oid", "cert_group_oid", "select_group", "auto_select_group", "default_select_group",
	"server_cert", "server_key", "config_per_user", "config_per_group", "default_user_config", "default_group_config",
	// read from the live configuration by the protocol server (protocol.Server.conf) at each use
	"cookie_timeout", "request_timeout", "auth_timeout", "max_clients", "ban_points_connection",
	"ban_points_wrong_password", "switch_to_tcp_timeout", "persistent_cookies", "compression", "no_compress_limit",
	"compression_algo_priority", "dtls_psk"}

// backend is the control socket's view of the running server.
type backend struct {
	*protocol.Server
	log      *slog.Logger
	datapath string
	stop     func()

	mu          sync.Mutex
	cfg         *config.Config // guarded by mu: the configuration in effect
	stateDir    string
	cert        *atomic.Pointer[tls.Certificate]
	secmod      *secmod.Client
	revocations *auth.Revocations // the CRL the TLS handshake checks client certificates against
}

var _ ctl.Backend = (*backend)(nil)

func (b *backend) BanList() []auth.BanInfo { return b.Bans().List(time.Now()) }
func (b *backend) Unban(a netip.Addr) bool { return b.Bans().Unban(a) }
func (b *backend) Stop()                   { b.stop() }
func (b *backend) ServerInfo() ctl.ServerInfo {
	return ctl.ServerInfo{PID: os.Getpid(), Datapath: b.datapath, Version: version}
}

// Reload re-reads the configuration file here, and asks the security module to re-read it with the certificate,
// the key and the password file (a new module worker loads them and replaces the running one). A configuration
// with errors, or secrets the module cannot load, are refused (each error names FILE:LINE) and the running ones
// stay.
func (b *backend) Reload() (ctl.ReloadReport, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.Path == "" {
		return ctl.ReloadReport{}, errors.New("the server runs on the embedded defaults (no -c FILE): nothing to reload")
	}
	cfg, err := config.Load(b.cfg.Path)
	if err != nil {
		return ctl.ReloadReport{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hello, err := b.secmod.Reload(ctx)
	if err != nil {
		return ctl.ReloadReport{}, err
	}
	cert, err := b.secmod.Certificate(hello)
	if err != nil {
		return ctl.ReloadReport{}, err
	}
	if cfg.CACert != "" {
		if err := b.revocations.Load(cfg.CRL); err != nil {
			return ctl.ReloadReport{}, err
		}
	}
	var r ctl.ReloadReport
	for _, k := range config.Changed(b.cfg, cfg) {
		if config.PerSession(k) || slices.Contains(liveKeys, k) {
			r.Applied = append(r.Applied, k)
		} else {
			r.NeedsRestart = append(r.NeedsRestart, k)
		}
	}
	for _, w := range cfg.Warnings {
		b.log.Warn(w)
	}
	b.cert.Store(cert)
	b.SetConfig(cfg)
	b.cfg = cfg
	b.log.Info("configuration reloaded", "applied", r.Applied, "needs_restart", r.NeedsRestart)
	return r, nil
}

// startControlSocket listens on the control socket (before privileges are dropped: /run/ocgate needs root) and
// returns the function that serves it once they are.
func startControlSocket(cfg *config.Config, stateDir string, b *backend, log *slog.Logger) (serve func(), closeFn func(), err error) {
	if !cfg.UseOcctl {
		return func() {}, func() {}, nil
	}
	path := socketPath(cfg, stateDir)
	ln, err := ctl.Listen(path)
	if errors.Is(err, ctl.ErrInUse) && cfg.SocketFile == "" {
		// The default place is taken by another server (several on one host, as root): this one runs without
		// a control socket rather than not at all; socket_file gives each its own.
		log.Warn("no control socket: another server uses the default one; set socket_file", "path", path)
		return func() {}, func() {}, nil
	}
	if err != nil && cfg.SocketFile == "" && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
		// The default place is in a state directory this user cannot create (a read-only container, a system
		// user without a home): a configuration that needs no state directory still starts.
		log.Warn("no control socket: its default place is not writable; set socket_file (or use_occtl = false)", "err", err)
		return func() {}, func() {}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if os.Geteuid() == 0 && cfg.RunAsUser != "" {
		// The socket belongs to the user the server runs as.
		if u, err := user.Lookup(cfg.RunAsUser); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(path, uid, gid)
		}
	}
	log.Info("control socket listening", "path", path)
	done := make(chan struct{})
	serve = func() {
		srv := ctl.NewServer(b, os.Geteuid(), log.With("component", "ctl"))
		go func() {
			defer close(done)
			if err := srv.Serve(ln); err != nil {
				log.Error("control socket stopped", "err", err)
			}
		}()
	}
	closeFn = func() {
		ln.Close()
		os.Remove(path)
	}
	return serve, closeFn, nil
}

// startMetrics serves /metrics, /healthz and /readyz on metrics_listen.
func startMetrics(cfg *config.Config, srv *protocol.Server, dp *wiredDatapath, draining *atomic.Bool, log *slog.Logger) (func(), error) {
	if cfg.MetricsListen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	o := metrics.Options{Source: srv, Datapath: cfg.Datapath, Draining: draining.Load}
	if ns, ok := dp.Datapath.(*netstack.Stack); ok {
		o.Flows = func() metrics.FlowStats {
			s := ns.Stats()
			return metrics.FlowStats{
				TCPFlows: s.TCPFlows, UDPFlows: s.UDPFlows, RefusedPolicy: s.RefusedPolicy, RefusedLimit: s.RefusedLimit,
				RefusedHalfOpen: s.RefusedHalfOpen, RefusedDials: s.RefusedDials, RefusedPorts: s.RefusedPorts,
				RefusedHostFlows: s.RefusedHostFlows, DNSRefused: s.DNSRefused, EchoRefused: s.EchoRefused,
				DeniedC2C: s.DeniedClientToClient, DroppedSpoofed: s.DroppedSpoofed, DroppedMalformed: s.DroppedMalformed,
			}
		}
	}
	hs := &http.Server{Handler: metrics.Handler(o), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() { hs.Close() }, nil
}
