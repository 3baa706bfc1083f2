package protocol

// A Session is what a successful login creates and what its cookie names. It outlives the TLS connections that
// carry it: a client that loses its connection comes back with the cookie (a new CONNECT, a new tunnel) and gets
// the same address, and its flows in the datapath survive because the session, not the tunnel, is attached there.
//
// States:
//
//	authenticated ──CONNECT──► connected ──connection lost──► disconnected ──cookie_timeout──► ended
//	      │                     ▲   │                             │
//	      │                     │   └──CONNECT with the cookie────┘ (takeover: the old tunnel is torn down)
//	      └──cookie_timeout──► ended ◄──logout (client BYE 0xb0), session_timeout, shutdown
//
// The lease and the datapath port are taken at the first CONNECT and released when the session ends.

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
)

// Session is one authenticated user's VPN session.
type Session struct {
	ID        uint64
	User      string
	Groups    []string
	UserAgent string
	DeviceID  string // the <device-id> of the login (platform)
	Created   time.Time

	env      *sessionEnv
	cookie   string
	ucfg     *config.UserConfig // the session's configuration (global + group + user files), fixed at login
	pcfg     sessionPolicy      // the part of ucfg the datapath and the CONNECT response use
	authAddr netip.Addr         // the client address that logged in (deny_roaming)
	rxLimit  *tokenBucket
	txLimit  *tokenBucket
	grants   auth.Grants // what the authentication server assigned (accounting.go)
	certSum  *[32]byte   // SHA-256 of the certificate the login read the user from; nil: none (checkCookie)

	// cur is the tunnel that carries traffic now, read without locks on the packet path (Deliver).
	cur atomic.Pointer[tunnel]

	// Counters, from the server's point of view: rx = received from the client, tx = sent to it.
	rxBytes, txBytes, rxPackets, txPackets, rxDropped, txDropped atomic.Uint64
	dtlsRxBytes, dtlsTxBytes                                     atomic.Uint64 // the part that crossed DTLS
	// COMPRESSED packets (either channel): decoded and taken, sent, and dropped because they did not decode.
	compressedIn, compressedOut, compressedBad atomic.Uint64

	mu           sync.Mutex
	addr         netip.Addr     // guarded by mu: leased IPv4 address, valid after the first CONNECT
	addr6        netip.Addr     // guarded by mu: leased IPv6 address (its prefix is the client's), if any
	lease4       *Pool          // guarded by mu: the pool addr came from (the session's ipv4_network)
	lease6       *Pool6         // guarded by mu: the pool addr6 came from, if any
	port         datapath.Port  // guarded by mu: attachment to the datapath
	tunnel       *tunnel        // guarded by mu: current tunnel, nil when disconnected
	remote       netip.AddrPort // guarded by mu: client address of the latest connection
	acctTimer    *time.Timer    // guarded by mu: the next Interim-Update; nil = none
	acctStarted  bool           // guarded by mu: accounting Start was answered
	expiry       *time.Timer    // guarded by mu: ends the session when the cookie times out
	sessionTimer *time.Timer    // guarded by mu: session_timeout
	ended        bool           // guarded by mu

	// For the scripts (scripts.go), set at the first CONNECT.
	device      string         // guarded by mu: the datapath's device name (kernel TUN), "" in netstack mode
	connectedAt time.Time      // guarded by mu
	localReal   netip.AddrPort // guarded by mu: server end of the first tunnel's TCP connection
	hostname    string         // guarded by mu: X-CSTP-Hostname
	deviceType  string         // guarded by mu: X-AnyConnect-Identifier-DeviceType
	platform    string         // guarded by mu: X-AnyConnect-Identifier-Platform, else the login's device-id
	scriptsDue  bool           // guarded by mu: connect succeeded, so disconnect must run
	scriptReal  netip.AddrPort // guarded by mu: the client address the last connect script saw (IP_REAL)
	admitted    bool           // guarded by env.admitMu: counted against max_same_clients (its cookie is in use)

	// Shared state (shared.go).
	sid        [16]byte   // the session id a sealed cookie carries; zero without cookie_key_file
	pre4, pre6 netip.Addr // guarded by mu: addresses leased at login (shared state), taken at the first CONNECT
	moved      bool       // guarded by mu: another instance owns the session now (ends without revocation)
}

// sessionEnv is what sessions need from their server: the address pools, the datapath, two settings, and the way
// to end a session for good (Server.endSession, which also runs the disconnect script). One per server.
type sessionEnv struct {
	pools             *pools
	dp                datapath.Datapath
	cookieTimeout     time.Duration
	persistentCookies bool
	endSession        func(s *Session, reason string)
	stats             *serverStats // nil in tests that build sessions by hand

	// admitMu serializes the max_same_clients check with the marking of the session it admits, so two CONNECTs
	// of one user cannot both take the last place.
	admitMu sync.Mutex
}

// sessionPolicy is the per-session part of the configuration.
type sessionPolicy struct {
	routes, noRoutes []netip.Prefix
	iroutes          []netip.Prefix
	dns              []netip.Addr
	restrict         bool // restrict_user_to_routes
}

// scriptInfo captures what the scripts' environment is built from. IP_REAL is the address the last connect
// script saw, so the disconnect script that follows it sees the same one even after the client has moved.
func (s *Session) scriptInfo() scriptInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	rx, tx, _, _ := s.Stats()
	remote := s.remote
	if s.scriptReal.IsValid() {
		remote = s.scriptReal
	}
	p4, p6 := s.leasePoolsLocked()
	return scriptInfo{
		sess: s, device: s.device, local: p4.Gateway(), local6: p6.Gateway(), bits6: p6.SubnetBits(),
		addr: s.addr, addr6: s.addr6, remote: remote,
		localReal: s.localReal, hostname: s.hostname, deviceType: s.deviceType, platform: s.platform,
		rx: rx, tx: tx, connectedAt: s.connectedAt,
	}
}

// leasePools returns the pools the session's addresses come from: the ones it leased from, else (before its
// first CONNECT) the global ones. The IPv6 pool is nil without IPv6.
func (s *Session) leasePools() (*Pool, *Pool6) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leasePoolsLocked()
}

// leasePoolsLocked is leasePools with s.mu held.
func (s *Session) leasePoolsLocked() (*Pool, *Pool6) {
	if s.lease4 != nil {
		return s.lease4, s.lease6
	}
	return s.env.pools.main, s.env.pools.main6
}

// disconnectScriptDue reports (once) whether the disconnect script must run for this session.
func (s *Session) disconnectScriptDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	due := s.scriptsDue
	s.scriptsDue = false
	return due
}

// admit counts the session against max_same_clients (n; 0 = unlimited) at its CONNECT: it is refused when n other
// sessions of the user are in use (their cookie was used for a CONNECT and they have not ended). A session
// admitted once stays admitted (its reconnects and takeovers are not counted again).
func (s *Session) admit(all []*Session, n int) bool {
	s.env.admitMu.Lock()
	defer s.env.admitMu.Unlock()
	if s.admitted || n <= 0 {
		s.admitted = true
		return true
	}
	inUse := 0
	for _, o := range all {
		if o != s && o.User == s.User && o.admitted && !o.hasEnded() {
			inUse++
		}
	}
	if inUse >= n {
		return false
	}
	s.admitted = true
	return true
}

func (s *Session) isAdmitted() bool {
	s.env.admitMu.Lock()
	defer s.env.admitMu.Unlock()
	return s.admitted
}

func (s *Session) hasEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Addr returns the session's tunnel address (invalid before the first CONNECT).
func (s *Session) Addr() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Connected reports whether a tunnel carries the session now.
func (s *Session) Connected() bool { return s.cur.Load() != nil }

// DTLSBytes returns how many of the rx/tx bytes crossed DTLS.
func (s *Session) DTLSBytes() (rx, tx uint64) { return s.dtlsRxBytes.Load(), s.dtlsTxBytes.Load() }

// Compressed returns how many COMPRESSED packets the session took from the client (in), sent to it (out), and
// dropped because they did not decode (bad).
func (s *Session) Compressed() (in, out, bad uint64) {
	return s.compressedIn.Load(), s.compressedOut.Load(), s.compressedBad.Load()
}

// Stats returns the byte and packet counters (rx = from the client).
func (s *Session) Stats() (rxBytes, txBytes, rxPackets, txPackets uint64) {
	return s.rxBytes.Load(), s.txBytes.Load(), s.rxPackets.Load(), s.txPackets.Load()
}

// deliver is the datapath's Deliver callback: deliverBuffer with a copy of pkt.
func (s *Session) deliver(pkt []byte) {
	b := datapath.GetBuffer(len(pkt))
	if b == nil {
		s.txDropped.Add(1)
		return
	}
	copy(b.Packet(), pkt)
	s.deliverBuffer(b)
}

// deliverBuffer is the datapath's DeliverBuffer callback: it queues b on the current tunnel, or drops (releases)
// it when the session has none (the client is reconnecting) or the tunnel's queue is full.
func (s *Session) deliverBuffer(b *datapath.Buffer) { s.queueBuffer(b, false) }

// deliverHeld is the datapath's DeliverHeld callback: deliverBuffer, except that the tunnel's sender is not woken
// until kick.
func (s *Session) deliverHeld(b *datapath.Buffer) { s.queueBuffer(b, true) }

func (s *Session) queueBuffer(b *datapath.Buffer, held bool) {
	t := s.cur.Load()
	if t == nil || !s.txLimit.allow(b.N) || !t.queueData(b, held) {
		s.txDropped.Add(1)
		b.Release()
	}
}

// kick is the datapath's Kick callback: the packets held for the current tunnel go out.
func (s *Session) kick() {
	if t := s.cur.Load(); t != nil {
		t.kick()
	}
}

// startExpiryLocked arms the cookie timer: the session ends if no tunnel takes it within d.
// s.mu must be held.
func (s *Session) startExpiryLocked(d time.Duration) {
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.expiry = time.AfterFunc(d, func() { s.env.endSession(s, "cookie expired") })
}

// attach makes t the session's tunnel, tearing down the previous one (takeover), and takes the address lease and
// the datapath port on the first CONNECT, which it reports as first.
// want6 asks for an IPv6 address too (the client takes IPv6 and the pool has it).
func (s *Session) attach(t *tunnel, remote netip.AddrPort, want6 bool) (first bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false, errSessionEnded
	}
	if !s.addr.IsValid() {
		first = true
		// The session's own pools (ipv4_network, ipv6_network of its per-user or per-group file), else the
		// global ones.
		pool, err := s.env.pools.pool4(s.ucfg.IPv4Network)
		if err != nil {
			return false, err
		}
		pool6, err := s.env.pools.pool6(s.ucfg.IPv6Network)
		if err != nil {
			return false, err
		}
		// With shared state the addresses were leased at login (shared.go): they stay the session's until it ends.
		pre := s.pre4.IsValid()
		var a netip.Addr
		switch {
		case pre:
			a = s.pre4
		case s.ucfg.ExplicitIPv4.IsValid():
			a, err = s.ucfg.ExplicitIPv4, pool.AcquireAddr(s.ucfg.ExplicitIPv4)
		default:
			a, err = pool.Acquire(s.User)
		}
		if err != nil {
			return false, err
		}
		release := func(a, a6 netip.Addr) {
			if pre {
				return
			}
			pool.Release(a)
			if a6.IsValid() {
				pool6.Release(a6)
			}
		}
		addrs := []netip.Addr{a}
		var a6 netip.Addr
		if want6 && pool6 != nil {
			switch {
			case pre:
				a6 = s.pre6
			case s.grants.IPv6.IsValid(): // RADIUS Framed-IPv6-Address or -Prefix
				a6, err = pool6.AcquirePrefix(s.grants.IPv6)
			case s.ucfg.ExplicitIPv6.IsValid():
				a6, err = s.ucfg.ExplicitIPv6, pool6.AcquireAddr(s.ucfg.ExplicitIPv6)
			default:
				a6, err = pool6.Acquire(s.User)
			}
			if err != nil {
				release(a, netip.Addr{})
				return false, err
			}
			if a6.IsValid() {
				addrs = append(addrs, a6)
			}
		}
		iroutes := s.pcfg.iroutes
		if a6.IsValid() && pool6.SubnetBits() < 128 { // the client's whole IPv6 prefix is behind it
			iroutes = append(slices.Clone(iroutes), netip.PrefixFrom(a6, pool6.SubnetBits()).Masked())
		}
		port, err := s.env.dp.Attach(&datapath.Session{
			ID:            s.ID,
			User:          s.User,
			Groups:        s.Groups,
			Addrs:         addrs,
			Routes:        s.pcfg.routes,
			NoRoutes:      s.pcfg.noRoutes,
			IRoutes:       iroutes,
			MTU:           t.mtu,
			Deliver:       s.deliver,
			DeliverBuffer: s.deliverBuffer,
			DeliverHeld:   s.deliverHeld,
			Kick:          s.kick,

			RestrictToRoutes: s.pcfg.restrict,
			ClientToClient:   s.ucfg.ClientToClient,
			Ports:            s.portRules(),
			DNS:              s.pcfg.dns,
		})
		if err != nil {
			release(a, a6)
			return false, fmt.Errorf("attaching to the datapath: %w", err)
		}
		s.addr, s.addr6, s.port, s.lease4, s.lease6 = a, a6, port, pool, pool6
		if d, ok := port.(datapath.Device); ok {
			s.device = d.DeviceName()
		}
		s.connectedAt = time.Now()
	}
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	if old := s.tunnel; old != nil {
		old.end("replaced by a new connection", cstp.Disconnect)
	}
	s.tunnel = t
	s.remote = remote
	s.cur.Store(t)
	return first, nil
}

// detach is called when tunnel t has ended. Unless the user logged out, the session waits for a reconnect for
// cookie_timeout.
func (s *Session) detach(t *tunnel, logout bool) {
	s.mu.Lock()
	current := s.tunnel == t
	if current {
		s.tunnel = nil
		s.cur.Store(nil)
		if !logout && !s.ended {
			s.startExpiryLocked(s.env.cookieTimeout)
		}
	}
	s.mu.Unlock()
	// A logout counts only from the tunnel that carries the session: a client that was replaced (takeover) says
	// goodbye on its old connection as it leaves, and that must not end the session its successor now uses.
	if logout && current && !s.env.persistentCookies {
		s.env.endSession(s, "user logged out")
	}
}

// logout ends the session if t still carries it (a user's DISCONNECT) and cookies are not persistent.
func (s *Session) logout(t *tunnel) {
	s.mu.Lock()
	current := s.tunnel == t
	s.mu.Unlock()
	if current && !s.env.persistentCookies {
		s.env.endSession(s, "user logged out")
	}
}

// end marks the session ended and returns what must be released, or ok=false if it had already ended.
func (s *Session) end() (t *tunnel, port datapath.Port, addr netip.Addr, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, nil, netip.Addr{}, false
	}
	s.ended = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.sessionTimer != nil {
		s.sessionTimer.Stop()
	}
	if s.acctTimer != nil {
		s.acctTimer.Stop()
	}
	t, port, addr = s.tunnel, s.port, s.addr
	s.tunnel, s.port = nil, nil
	s.cur.Store(nil)
	return t, port, addr, true
}
