package protocol

// Several instances (redis_url): the server's side of the shared state (protocol/cluster) and of sealed cookies
// (auth.CookieSealer, in the security module).
//
//	login     sharedLoginCheck (redis_unavailable) ─► newSession ─► leaseAtLogin: IPv4 (and IPv6) leased here
//	          and in Redis (SET NX, fenced by session id) ─► the cookie seals session id, user, groups, addresses
//	CONNECT   cookie unknown here ─► roam: open the cookie (security module), Take ownership in Redis (refused
//	          when revoked; the old owner is told by pub/sub), lease the cookie's addresses again (held by the same
//	          session id: taken over; by another: a new address) ─► the CONNECT goes on as a first one (connect
//	          script, accounting Start)
//	          first CONNECT of a session ─► max_same_clients counted in Redis (sharedAdmit)
//	end       logout, terminate, cookie_timeout ─► Revoke in Redis (in the background); a session another
//	          instance took over (takeover message, or renewal finding it owned elsewhere) ends quietly: no
//	          revocation, its leases are the new owner's. Shutdown revokes nothing and closes the tunnels without
//	          a TERMINATE: the clients reconnect with their cookies and roam.
//
// No Redis call is on the packet path or blocks DPD: logins and CONNECTs make bounded calls, renewal and
// revocation run in the background. Without redis_url none of this runs; a cookie_key_file alone seals cookies
// but an instance still knows only its own sessions (a restarted instance refuses the cookies it issued before).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"ocgate/auth"
	"ocgate/protocol/cluster"
)

// maxLeaseTries bounds the addresses a login tries in Redis before giving up (others held by other instances).
const maxLeaseTries = 64

// errDegraded refuses a login while Redis is unreachable and redis_unavailable = "refuse".
var errDegraded = errLimit("The VPN service is degraded (its shared state is unreachable); try again in a moment.")

// addrPool is what leasing needs of Pool and Pool6.
type addrPool interface {
	Acquire(user string) (netip.Addr, error)
	AcquireAddr(a netip.Addr) error
	Release(a netip.Addr)
}

// sharedLoginCheck decides whether a login may create a session now: local reports that Redis is unreachable
// and redis_unavailable = "local" (the session is published when Redis returns).
func (s *Server) sharedLoginCheck() (local bool, err error) {
	if s.cluster == nil || s.cluster.Healthy() {
		return false, nil
	}
	if s.conf().RedisUnavailable == "local" {
		s.warnLocal()
		return true, nil
	}
	return false, errDegraded
}

// warnLocal says, for each login, that this instance decides alone (redis_unavailable = "local").
func (s *Server) warnLocal() {
	s.log.Warn("shared state unreachable: login handled by this instance alone (redis_unavailable = local); " +
		"published when Redis returns")
}

// mintCookie returns the cookie of a new session: sealed (session id, user, groups, addresses) when a sealer is
// configured, else random.
func (s *Server) mintCookie(sess *Session) (string, error) {
	if s.sealer == nil {
		return s.minter.MintCookie()
	}
	sess.mu.Lock()
	t := auth.Token{SessionID: sess.sid, User: sess.User, Groups: sess.Groups, IPv4: sess.pre4, IPv6: sess.pre6,
		AuthAddr: sess.authAddr, CertSum: sess.certSum}
	sess.mu.Unlock()
	if d := sess.ucfg.SessionTimeout; d > 0 {
		t.NotAfter = sess.Created.Add(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cluster.CallTimeout)
	defer cancel()
	return s.sealer.SealCookie(ctx, t)
}

// leaseAtLogin leases the session's addresses when it is created (shared state only: the cookie carries them, so
// that another instance gives the same ones), preferring want4 and want6 (a roaming cookie's).
func (s *Server) leaseAtLogin(sess *Session, want4, want6 netip.Addr, local bool) error {
	pool, err := s.sessEnv.pools.pool4(sess.ucfg.IPv4Network)
	if err != nil {
		return err
	}
	pool6, err := s.sessEnv.pools.pool6(sess.ucfg.IPv6Network)
	if err != nil {
		return err
	}
	a, err := s.leaseOne(sess, pool, sess.ucfg.ExplicitIPv4, want4, local)
	if err != nil {
		return err
	}
	var a6 netip.Addr
	if pool6 != nil {
		fixed6 := sess.ucfg.ExplicitIPv6
		if g := sess.grants.IPv6; g.IsValid() {
			fixed6 = g.Addr()
		}
		if a6, err = s.leaseOne(sess, pool6, fixed6, want6, local); err != nil {
			s.releaseAddrs(sess, pool, nil, a, netip.Addr{})
			return err
		}
	}
	sess.mu.Lock()
	sess.pre4, sess.pre6, sess.lease4, sess.lease6 = a, a6, pool, pool6
	sess.mu.Unlock()
	return nil
}

// leaseOne leases one address of p for sess, locally and in Redis: fixed (explicit_ipv4/6, RADIUS) or nothing;
// else want when it is free; else the pool's choice, skipping addresses other instances hold.
func (s *Server) leaseOne(sess *Session, p addrPool, fixed, want netip.Addr, local bool) (netip.Addr, error) {
	try := func(a netip.Addr) error {
		if err := p.AcquireAddr(a); err != nil {
			return err
		}
		if local {
			return nil
		}
		if err := s.cluster.Lease(a, sess.sidString()); err != nil {
			p.Release(a)
			return err
		}
		return nil
	}
	if fixed.IsValid() {
		if err := try(fixed); err != nil {
			if errors.Is(err, cluster.ErrLeased) {
				return netip.Addr{}, ErrAddressInUse
			}
			return netip.Addr{}, err
		}
		return fixed, nil
	}
	if want.IsValid() {
		err := try(want)
		if err == nil {
			return want, nil
		}
		if errors.Is(err, cluster.ErrUnavailable) {
			return netip.Addr{}, err
		}
		s.log.Warn("roaming session gets a new address: its own is held by another session", "user", sess.User,
			"addr", want, "err", err)
	}
	var held []netip.Addr // held by other instances: kept out of the local search until the end
	defer func() {
		for _, h := range held {
			p.Release(h)
		}
	}()
	for range maxLeaseTries {
		a, err := p.Acquire(sess.User)
		if err != nil {
			return netip.Addr{}, err
		}
		if local {
			return a, nil
		}
		err = s.cluster.Lease(a, sess.sidString())
		if err == nil {
			return a, nil
		}
		held = append(held, a)
		if !errors.Is(err, cluster.ErrLeased) {
			return netip.Addr{}, err
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

// releaseAddrs gives back addresses leased at login (locally; in Redis unless the session moved away).
func (s *Server) releaseAddrs(sess *Session, p *Pool, p6 *Pool6, a, a6 netip.Addr) {
	if a.IsValid() && p != nil {
		p.Release(a)
	}
	if a6.IsValid() && p6 != nil {
		p6.Release(a6)
	}
	if s.cluster != nil && !sess.hasMoved() {
		s.cluster.Release(sess.sidString(), a, a6)
	}
}

// sharedCreate records a new session in Redis (local: not now, renewal publishes it when Redis returns).
func (s *Server) sharedCreate(sess *Session, local bool) error {
	if s.cluster == nil {
		return nil
	}
	if local {
		return nil // renewal publishes it when Redis answers again
	}
	return s.cluster.Create(sess.record())
}

// record is the session as the shared state holds it.
func (sess *Session) record() cluster.Record {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	a4, a6 := sess.pre4, sess.pre6
	if sess.addr.IsValid() {
		a4, a6 = sess.addr, sess.addr6
	}
	return cluster.Record{SID: fmt.Sprintf("%x", sess.sid[:]), User: sess.User, Groups: sess.Groups, IPv4: a4,
		IPv6: a6, Remote: sess.remote.String(), Created: sess.Created}
}

// sidString is the session id as the shared state names it.
func (sess *Session) sidString() string { return fmt.Sprintf("%x", sess.sid[:]) }

func (sess *Session) hasMoved() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.moved
}

// roam makes a session of a cookie this instance does not know: one sealed by an instance sharing the keys, whose
// session lives in Redis. nil (after refusing the CONNECT) when it cannot.
func (s *Server) roam(st *connState, cookie string) (*Session, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.CallTimeout)
	tok, err := s.sealer.OpenCookie(ctx, cookie)
	cancel()
	if err != nil {
		why := "unknown or expired cookie"
		if !errors.Is(err, auth.ErrBadCookie) {
			why = "cannot open the cookie: " + err.Error()
		}
		s.refuse(st, 401, "Cookie is not acceptable", why)
		return nil, false
	}
	if !s.cluster.Healthy() {
		s.refuse(st, 503, "Service Unavailable", "a roaming cookie needs the shared state, which is unreachable")
		return nil, false
	}
	// One roam per session at a time (a client retrying fast, or two with one cookie); roams of different
	// sessions, and logins, do not wait for each other's round trips (many clients arrive at once when an
	// instance dies).
	sid := fmt.Sprintf("%x", tok.SessionID[:])
	done := s.roamStart(sid)
	defer done()
	if sess := s.sessions.Lookup(cookie); sess != nil { // a concurrent CONNECT with the same cookie made it
		return sess, true
	}
	if !s.reserveSession() {
		s.refuse(st, 503, "Service Unavailable", "max_clients reached: a roaming session refused")
		return nil, false
	}
	defer s.unreserveSession()
	id := auth.Identity{User: tok.User, Groups: tok.Groups}
	sess, err := s.buildSession(id, st)
	if err != nil {
		s.refuse(st, 401, "Cookie is not acceptable", err.Error())
		return nil, false
	}
	sess.sid, sess.cookie, sess.certSum = tok.SessionID, cookie, tok.CertSum
	if tok.AuthAddr.IsValid() {
		sess.authAddr = tok.AuthAddr
	}
	// The login's certificate and deny_roaming are checked before the session is taken from its owner: a cookie
	// that this connection may not use must not end the session where it lives (checkCookie checks them again).
	if why := s.connectionMayNotUse(st, sess); why != "" {
		s.refuse(st, 401, "Cookie is not acceptable", why)
		return nil, false
	}
	rec, from, err := s.cluster.Take(sid, st.remote.String())
	if err != nil {
		if errors.Is(err, cluster.ErrRevoked) {
			s.refuse(st, 401, "Cookie is not acceptable", "session was logged out, terminated or expired")
		} else {
			s.refuse(st, 503, "Service Unavailable", "shared state: "+err.Error())
		}
		return nil, false
	}
	want4, want6 := tok.IPv4, tok.IPv6
	if rec.IPv4.IsValid() {
		want4, want6 = rec.IPv4, rec.IPv6
	}
	if err := s.leaseAtLogin(sess, want4, want6, false); err != nil {
		s.refuse(st, 503, "Service Unavailable", "roaming session: "+err.Error())
		return nil, false
	}
	if !rec.Created.IsZero() {
		sess.Created = rec.Created // the login's, as the record says
	}
	s.armSession(sess, st)
	if !tok.NotAfter.IsZero() { // session_timeout counts from the login, not from the roam
		sess.mu.Lock()
		if sess.sessionTimer != nil {
			sess.sessionTimer.Reset(time.Until(tok.NotAfter))
		}
		sess.mu.Unlock()
	}
	s.newSessMu.Lock()
	s.sessions.Add(sess)
	s.newSessMu.Unlock()
	s.log.Info("session roamed here", "user", sess.User, "remote", st.remote, "id", sess.ID, "sid", sid,
		"from", from, "ip", sess.pre4)
	return sess, true
}

// roamStart waits until no other roam of session sid is in progress and marks this one; done ends it.
func (s *Server) roamStart(sid string) (done func()) {
	for {
		s.roamMu.Lock()
		busy, ok := s.roaming[sid]
		if !ok {
			if s.roaming == nil {
				s.roaming = map[string]chan struct{}{}
			}
			ch := make(chan struct{})
			s.roaming[sid] = ch
			s.roamMu.Unlock()
			return func() {
				s.roamMu.Lock()
				delete(s.roaming, sid)
				s.roamMu.Unlock()
				close(ch)
			}
		}
		s.roamMu.Unlock()
		<-busy
	}
}

// sharedAdmit counts the session against max_same_clients across instances at its first CONNECT here. Redis
// unreachable: the local count decides.
func (s *Server) sharedAdmit(sess *Session, n int) bool {
	local := func() bool {
		if n <= 0 {
			return sess.admit(nil, n) // no limit: nothing to count
		}
		return sess.admit(s.sessions.UserSessions(sess.User), n)
	}
	if s.cluster == nil || sess.isAdmitted() || !s.cluster.Healthy() {
		return local()
	}
	ok, err := s.cluster.Admit(sess.User, sess.sidString(), n)
	if err != nil {
		return local()
	}
	if ok {
		sess.admit(nil, 0)
	}
	return ok
}

// sharedEnded tells Redis a session ended here: revoked, unless another instance took it over or the server is
// shutting down (its clients roam to the other instances). In the background: endSession is called from timers.
func (s *Server) sharedEnded(sess *Session, a, a6 netip.Addr) {
	if s.cluster == nil || s.closing.Load() || sess.hasMoved() {
		return
	}
	sid, user := sess.sidString(), sess.User
	s.sharedWG.Go(func() {
		if _, err := s.cluster.Revoke(sid, user, a, a6); err != nil {
			s.log.Warn("shared state: revocation failed; the cookie expires with its record", "sid", sid, "err", err)
		}
	})
}

// sessionBySID returns the local session with that shared id, or nil.
func (s *Server) sessionBySID(sid string) *Session {
	for _, sess := range s.sessions.All() {
		if sess.sidString() == sid {
			return sess
		}
	}
	return nil
}

// moveAway ends a session another instance owns now, quietly: no revocation, and the leases are left to the
// new owner (the same session id holds them).
func (s *Server) moveAway(sid, why string) {
	sess := s.sessionBySID(sid)
	if sess == nil {
		return
	}
	sess.mu.Lock()
	sess.moved = true
	sess.mu.Unlock()
	s.endSession(sess, why)
}

// OnTakeover is the shared state's takeover callback: another instance took over a session of this one.
func (s *Server) OnTakeover(sid, by string) { s.moveAway(sid, "taken over by instance "+by) }

// OnConflict is the shared state's renewal callback: the session's record or a lease belongs to another
// instance's session now (a missed takeover, or a lease given out while Redis was unreachable). The local session
// ends; the other keeps what it holds.
func (s *Server) OnConflict(sid string) {
	s.log.Warn("shared state: a local session's record or address is held elsewhere; ending the local session", "sid", sid)
	s.moveAway(sid, "shared-state conflict")
}

// Owned lists the local sessions for the shared state's renewal (and reconcile after degradation).
func (s *Server) Owned() []cluster.Owned {
	all := s.sessions.All()
	out := make([]cluster.Owned, 0, len(all))
	for _, sess := range all {
		o := cluster.Owned{Rec: sess.record(), Admitted: sess.isAdmitted()}
		sess.mu.Lock()
		for _, a := range []netip.Addr{sess.addr, sess.addr6, sess.pre4, sess.pre6} {
			if a.IsValid() && !slices.Contains(o.Addrs, a) {
				o.Addrs = append(o.Addrs, a)
			}
		}
		ended := sess.ended || sess.moved
		sess.mu.Unlock()
		if !ended {
			out = append(out, o)
		}
	}
	return out
}

// ClusterSessions is the cluster view (`ctl show users --all-instances`); an error without shared state or when
// Redis cannot be reached.
func (s *Server) ClusterSessions() ([]cluster.Record, error) {
	if s.cluster == nil {
		return nil, errors.New("no shared state (redis_url is not set)")
	}
	return s.cluster.All()
}

// SharedState says how the shared state is: "" (none), "ok" or "degraded".
func (s *Server) SharedState() string {
	switch {
	case s.cluster == nil:
		return ""
	case s.cluster.Healthy():
		return "ok"
	}
	return "degraded"
}
