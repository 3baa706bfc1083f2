package protocol

// The HTTPS front: accept TCP, admit or shed the connection before any TLS work (admission.go), handshake TLS
// under a deadline in the connection's own goroutine, then serve HTTP/1.1 requests (authentication) until a
// CONNECT turns the connection into a tunnel. Layered like net/http: Serve tracks listeners and returns
// ErrServerClosed after Shutdown; serveConn recovers panics so one bad client cannot take the process down.
//
// Deadlines before login: the TLS handshake, and each request once its first byte has arrived, get
// request_timeout; the whole phase, from accept to login, gets auth_timeout. An idle connection holds no request
// buffer (readerPool).

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/protocol/cluster"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("ocgate: server closed")

var errSessionEnded = errors.New("session has ended")

const maxRequestsPerConn = 32

// readerPool holds the request readers of connections between requests.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// Options configure a Server. Config, TLSConfig, Auth (or Passwords), Datapath and Pool are required.
type Options struct {
	Config    *config.Config
	TLSConfig *tls.Config // must hold the server certificate; cloned and adjusted (TLS 1.2+, one record per write)
	Auth      auth.Authenticator
	Passwords auth.PasswordChecker // without Auth: logins ask for a password checked by Passwords
	Datapath  datapath.Datapath
	Pool      *Pool
	Pool6     *Pool6 // nil: no IPv6 inside the tunnel
	// UserPools are the networks per-user and per-group files name (config.UserNetworks) that the datapath
	// serves: each becomes a pool at its first session.
	UserPools []netip.Prefix
	Sessions  SessionStore      // nil = in-memory
	Cookies   auth.CookieMinter // nil = auth.RandomMinter
	// Accounting reports sessions (accounting.go); nil = none. A session whose Start it fails is refused.
	Accounting auth.Accounting
	// Bans keeps the ban points (admission.go); nil = an in-process auth.Bans of the configuration's ban keys.
	Bans    BanStore
	Logger  *slog.Logger // nil = slog.Default()
	Version string       // shown in X-CSTP-Server-Name
	// Scripts runs connect_script, disconnect_script and host_update_script (see scripts.go); nil = none.
	Scripts ScriptRunner
	// Cluster is the state shared with other instances through Redis (shared.go); nil = none (one instance).
	Cluster *cluster.Store
	// Sealer seals and opens cookies (cookie_key_file, in the security module); nil = random cookies (Cookies).
	// Cluster needs it.
	Sealer auth.CookieSealer
	// DefaultDNS is pushed when the configuration names no dns: the netstack's resolver at the pool's gateway.
	// nil = no DNS server pushed (the kernel-TUN datapath has no resolver of its own).
	DefaultDNS []netip.Addr
}

// Server is an OpenConnect (AnyConnect-compatible) VPN server.
type Server struct {
	cfg      *config.Config
	tlsConf  *tls.Config
	auth     auth.Authenticator
	minter   auth.CookieMinter
	bans     BanStore
	dp       datapath.Datapath
	pool     *Pool
	pool6    *Pool6
	sessions SessionStore
	log      *slog.Logger
	version  string
	scripts  ScriptRunner
	scriptWG sync.WaitGroup    // disconnect and host-update scripts run in the background
	acct     auth.Accounting   // nil = no accounting (accounting.go)
	acctWG   sync.WaitGroup    // accounting Stops and Interim-Updates in flight
	cluster  *cluster.Store    // nil: one instance (shared.go)
	sealer   auth.CookieSealer // nil: random cookies
	sharedWG sync.WaitGroup    // revocations in flight
	roamMu   sync.Mutex
	roaming  map[string]chan struct{}      // guarded by roamMu: session ids being roamed here, closed when done
	dns      []netip.Addr                  // pushed when the session's configuration names none
	sessEnv  *sessionEnv                   // what the sessions use of the server
	stats    serverStats                   // counters and events for the management interface (manage.go)
	live     atomic.Pointer[config.Config] // the reloaded configuration (manage.go: SetConfig, conf)

	dtls    atomic.Pointer[dtls.Server] // set by ServeDTLS
	udpPort int                         // the DTLS port announced to clients

	nextID      atomic.Uint64
	adm         *admission
	shed        atomic.Uint64 // connections closed by admission, for the log
	closing     atomic.Bool   // Shutdown has begun
	draining    atomic.Bool   // StopAccepting has closed the listeners
	lastLog     atomic.Int64  // rate limit for limitedLog
	newSessMu   sync.Mutex    // guards pendingSess and the max_clients check against sessions.Add
	pendingSess int           // guarded by newSessMu: logins being made into sessions, counted against max_clients

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[net.Conn]*connEntry   // guarded by mu: every open client connection
	connWG    sync.WaitGroup
}

// connEntry is what the server tracks of an open client connection. Guarded by Server.mu.
type connEntry struct {
	src    netip.Prefix // its source (admission.go)
	unauth bool         // it holds a place in the unauthenticated counts
	tunnel bool         // it carries a tunnel
}

// NewServer checks the options and returns a server ready to Serve.
func NewServer(o Options) (*Server, error) {
	if o.Auth == nil && o.Passwords != nil {
		o.Auth = auth.PasswordModule(o.Passwords)
	}
	if o.Config == nil || o.TLSConfig == nil || o.Auth == nil || o.Datapath == nil || o.Pool == nil {
		return nil, errors.New("protocol.NewServer: Config, TLSConfig, Auth, Datapath and Pool are required")
	}
	tc := o.TLSConfig.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	// Every CSTP frame must be exactly one TLS record; dynamic sizing would split early large frames (§6.2).
	tc.DynamicRecordSizingDisabled = true
	s := &Server{
		cfg:       o.Config,
		tlsConf:   tc,
		auth:      o.Auth,
		acct:      o.Accounting,
		dp:        o.Datapath,
		pool:      o.Pool,
		pool6:     o.Pool6,
		sessions:  o.Sessions,
		log:       o.Logger,
		version:   o.Version,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]*connEntry),
		adm: newAdmission(time.Duration(o.Config.RateLimitMS)*time.Millisecond, o.Config.MaxUnauthClients,
			o.Config.MaxUnauthPerIP),
	}
	if s.sessions == nil {
		s.sessions = NewMemoryStore()
	}
	if o.Cluster != nil && o.Sealer == nil {
		return nil, errors.New("protocol.NewServer: Cluster needs Sealer (cookie_key_file)")
	}
	s.cluster, s.sealer = o.Cluster, o.Sealer
	s.minter = o.Cookies
	if s.minter == nil {
		s.minter = auth.RandomMinter{}
	}
	s.bans = o.Bans
	if s.bans == nil {
		s.bans = auth.NewBans(BanConfigOf(o.Config))
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.scripts = o.Scripts
	s.dns = o.DefaultDNS
	s.sessEnv = &sessionEnv{pools: newPools(s.pool, s.pool6, o.Config.IPv6SubnetPrefix, o.UserPools), dp: s.dp, cookieTimeout: s.conf().CookieTimeout,
		persistentCookies: s.conf().PersistentCookies, endSession: s.endSession, stats: &s.stats}
	s.stats.start = time.Now()
	return s, nil
}

// ServeDTLS serves the DTLS data channel on pcs (one socket, or a SO_REUSEPORT group from dtls.Listen) until
// Shutdown. Call it before Serve so that the first CONNECT already offers DTLS.
func (s *Server) ServeDTLS(pcs ...*net.UDPConn) error {
	d := dtls.NewServer(pcs, s.log, s.cfg.DTLSFastPath)
	s.udpPort = pcs[0].LocalAddr().(*net.UDPAddr).Port
	s.dtls.Store(d)
	if s.closing.Load() {
		d.Close()
		return ErrServerClosed
	}
	if err := d.Serve(); err != nil && !s.closing.Load() {
		return err
	}
	return ErrServerClosed
}

// Bans returns the ban tracker (read by the management interface).
func (s *Server) Bans() BanStore { return s.bans }

// Sessions returns the session store (read by the management interface).
func (s *Server) Sessions() SessionStore { return s.sessions }

// Serve accepts TCP connections on ln and serves each in its own goroutine. It returns ErrServerClosed after
// Shutdown, or the first accept error that is not temporary.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeClear is Serve for a listener of plain HTTP whose TLS a trusted proxy in front terminated
// (listen_clear_file, listen_clear; edge.go): DTLS is not offered on its connections.
func (s *Server) ServeClear(ln net.Listener) error { return s.serve(ln, true) }

func (s *Server) serve(ln net.Listener, clear bool) error {
	s.mu.Lock()
	if s.closing.Load() || s.draining.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || s.draining.Load() {
				return ErrServerClosed
			}
			if isTemporaryAcceptErr(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		a := s.arrive(c, clear)
		if a.late { // admitted once the client's address is read (edge.go)
			if !s.track(a.conn, netip.Prefix{}, false) {
				shed(c)
				continue
			}
			go s.serveConn(a)
			continue
		}
		src, ok := s.admit(a.peer.Addr())
		if !ok {
			shed(c)
			continue
		}
		if !s.track(a.conn, src, true) {
			s.adm.release(src)
			shed(c)
			continue
		}
		go s.serveConn(a)
	}
}

// admit applies the cheap checks to a new connection from addr before any TLS work (admission.go): a banned
// address is refused (logged once per ban), every connection scores ban_points_connection, then the per-source
// rate and the caps on unauthenticated connections apply. It never waits: what is refused is closed at once. An
// unknown address (a unix socket's peer that named no client) is never banned, and such connections share one
// source.
func (s *Server) admit(addr netip.Addr) (netip.Prefix, bool) {
	now := time.Now()
	if banned, first := s.banned(addr, now); banned {
		if first {
			s.log.Warn("refusing connections from a banned address", "remote", addr)
		}
		return netip.Prefix{}, false
	}
	if s.addBanPoints(addr, s.conf().BanPointsConnection, now) {
		s.log.Warn("address banned", "remote", addr, "for", s.cfg.BanTime, "after", "too many connections")
		return netip.Prefix{}, false
	}
	src := sourceOf(addr)
	if ok, why := s.adm.admit(src, now); !ok {
		n := s.shed.Add(1)
		s.limitedLog("connection refused before TLS", "remote", addr, "limit", why, "refused_total", n)
		return netip.Prefix{}, false
	}
	return src, true
}

// shed closes a refused connection at once, with a reset rather than a FIN: no TIME_WAIT state is left behind
// for a connection that was never served.
func shed(c net.Conn) {
	if tc, ok := rawConn(c).(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// isTemporaryAcceptErr classifies resource exhaustion (EMFILE and friends) and aborted handshakes as retryable.
func isTemporaryAcceptErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

// track records a connection; admitted: it was admitted from src and holds a place in the unauthenticated counts
// (otherwise admitLate does that once its client address is known).
func (s *Server) track(c net.Conn, src netip.Prefix, admitted bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = &connEntry{src: src, unauth: admitted}
	s.connWG.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	if e := s.conns[c]; e != nil && e.unauth {
		s.adm.release(e.src)
	}
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// authenticated records that c has logged in or carries a tunnel: it no longer counts as unauthenticated.
func (s *Server) authenticated(c net.Conn) {
	s.mu.Lock()
	if e := s.conns[c]; e != nil && e.unauth {
		e.unauth = false
		s.adm.release(e.src)
	}
	s.mu.Unlock()
}

// StopAccepting closes the listeners (Serve returns ErrServerClosed) and leaves every connection and session as
// it is: the first half of a drain (server_drain_ms), before Shutdown.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	s.draining.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
}

// Shutdown stops accepting, sends TERMINATE to every connected client, and waits until their connections are
// closed or ctx is done; then it closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	for _, sess := range s.sessions.All() {
		s.endSession(sess, "server shutting down")
	}
	defer func() {
		if d := s.dtls.Load(); d != nil {
			d.Close()
		}
	}()
	s.mu.Lock()
	for c, e := range s.conns {
		// Connections still authenticating: close them now (tunnels close themselves after TERMINATE).
		if !e.tunnel {
			c.SetDeadline(time.Now())
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.connWG.Wait(); s.scriptWG.Wait(); s.acctWG.Wait(); s.sharedWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// markTunnel records that c now carries a tunnel (see Shutdown), so it is authenticated.
func (s *Server) markTunnel(c net.Conn) {
	s.authenticated(c)
	s.mu.Lock()
	if e := s.conns[c]; e != nil {
		e.tunnel = true
	}
	s.mu.Unlock()
}

// endSession ends a session for good: the cookie stops working, the tunnel (if any) gets a DISCONNECT, the
// datapath port and the address lease are released.
func (s *Server) endSession(sess *Session, reason string) {
	t, port, addr, ok := sess.end()
	if !ok {
		return
	}
	s.stats.sessionEnded(sess, reason)
	s.acctStop(sess, reason)
	var info scriptInfo
	armed := sess.disconnectScriptDue()
	if armed {
		info = sess.scriptInfo()
	}
	s.sessions.Remove(sess)
	final := cstp.Disconnect
	if s.closing.Load() {
		final = cstp.Terminate
		if s.cluster != nil {
			final = noFrame // the client reconnects, through the balancer, to another instance (shared.go)
		}
	}
	if t != nil {
		t.end(reason, final)
	}
	if addr.IsValid() && len(sess.pcfg.iroutes) > 0 {
		s.runRouteCmds(sess, "route-del") // route-add ran at the first CONNECT; the device is still there
	}
	if port != nil {
		port.Close()
	}
	pool, pool6 := sess.leasePools()
	sess.mu.Lock()
	addr6, pre4, pre6 := sess.addr6, sess.pre4, sess.pre6
	sess.mu.Unlock()
	if pre4.IsValid() { // leased at login (shared.go): the IPv6 one too, even if the tunnel did not take it
		addr, addr6 = pre4, pre6
	}
	if addr.IsValid() {
		pool.Release(addr)
	}
	if addr6.IsValid() {
		pool6.Release(addr6)
	}
	s.sharedEnded(sess, addr, addr6)
	s.log.Info("session ended", "id", sess.ID, "user", sess.User, "ip", addr, "reason", reason)
	if armed {
		s.scriptWG.Add(1)
		go func() {
			defer s.scriptWG.Done()
			s.runScript(info, "disconnect")
		}()
	}
}

// limitedLog logs at most one message per second for events a client can trigger per packet.
func (s *Server) limitedLog(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	if now-last < int64(time.Second) || !s.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, args...)
}

// connState is what the server knows about one client connection during authentication.
type connState struct {
	remote    netip.AddrPort // the client's address (edge.go: from a PROXY header or X-Forwarded-For behind a proxy)
	local     netip.AddrPort // the server's end of the connection (IP_REAL_LOCAL)
	raw       net.Conn       // the TCP (or unix) connection
	stream    net.Conn       // what requests and frames are read from and written to: tls, or raw's batch on a clear listener
	tls       *tls.Conn      // nil on a clear listener (TLS terminated in front): no DTLS
	batch     *batchConn     // below tls: lets the tunnel writer batch syscalls
	br        *bufio.Reader  // reads requests (through first); from readerPool, nil between requests
	first     [1]byte        // the first byte of the next request, read before br is taken
	hasFirst  bool
	failures  int
	userAgent string
	deviceID  string // <device-id> of the client's XML (linux-64, win, android, apple-ios...)
	loginID   string // the login module's login in progress on this connection
	// clientCert is the DER of the certificate the handshake verified (against ca_cert); nil: none.
	clientCert []byte
}

// Read feeds the request reader: the byte waitRequest read, then the TLS stream.
func (st *connState) Read(p []byte) (int, error) {
	if st.hasFirst && len(p) > 0 {
		st.hasFirst = false
		p[0] = st.first[0]
		return 1, nil
	}
	return st.stream.Read(p)
}

// waitRequest waits for the first byte of the next request without holding a request buffer, then takes one.
func (st *connState) waitRequest() error {
	if st.br != nil {
		return nil // bytes of a pipelined request are buffered already
	}
	if _, err := io.ReadFull(st.stream, st.first[:]); err != nil {
		return err
	}
	st.hasFirst = true
	st.br = readerPool.Get().(*bufio.Reader)
	st.br.Reset(st)
	return nil
}

// idle gives the request reader back between requests, unless it holds bytes of the next one.
func (st *connState) idle() {
	if st.br != nil && st.br.Buffered() == 0 {
		st.br.Reset(nil)
		readerPool.Put(st.br)
		st.br = nil
	}
}

func (s *Server) serveConn(a arrival) {
	c := a.conn
	tunnel := false // the connection went on to serveTunnel's goroutine, which untracks it
	defer func() {
		if !tunnel {
			s.untrack(c)
		}
	}()
	remote := a.peer
	defer func() { s.connPanicked(c, remote, recover()) }()
	authDeadline := time.Now().Add(s.conf().AuthTimeout)
	var local netip.AddrPort
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && !a.proxy {
		local = la.AddrPort()
	}
	healthCheck := false
	if a.proxy {
		var err error
		remote, local, healthCheck, err = readProxyHeader(a, earliest(time.Now().Add(s.conf().RequestTimeout), authDeadline))
		if err != nil {
			s.log.Info("connection closed", "remote", a.peer, "reason", err.Error())
			shed(c)
			return
		}
		if a.late && !healthCheck && !s.admitLate(c, remote.Addr()) {
			shed(c)
			return
		}
	}
	bc := newBatchConn(c)
	bc.unbatched = a.clear
	st := &connState{remote: remote, local: local, raw: c, stream: bc, batch: bc}
	if !a.clear {
		tc := tls.Server(bc, s.tlsConf)
		c.SetDeadline(earliest(time.Now().Add(s.conf().RequestTimeout), authDeadline))
		hsStart := time.Now()
		if err := tc.Handshake(); err != nil {
			if healthCheck { // a balancer's check connects and goes (HAProxy: with a reset)
				c.Close()
				return
			}
			s.handshakeFailed(remote, err)
			c.Close()
			return
		}
		s.stats.handshake.observe(time.Since(hsStart))
		st.stream, st.tls = tc, tc
		if cs := tc.ConnectionState(); len(cs.VerifiedChains) > 0 {
			st.clientCert = cs.PeerCertificates[0].Raw
		}
	}
	// The whole authentication phase must finish within auth_timeout; each request within request_timeout of
	// its first byte.
	c.SetDeadline(authDeadline)
	lateXFF := a.late && a.forwardedFor // admitted at the first request, by its X-Forwarded-For
	for range maxRequestsPerConn {
		err := st.waitRequest()
		var req *request
		if err == nil {
			c.SetReadDeadline(earliest(time.Now().Add(s.conf().RequestTimeout), authDeadline))
			req, err = readRequest(st.br)
			c.SetReadDeadline(authDeadline)
		}
		if err != nil {
			var he *httpError
			switch {
			case errors.As(err, &he):
				s.log.Info("connection closed", "remote", st.remote, "reason", "bad request: "+he.Error())
				st.stream.Write(errorResponse(he.status, he.reason).bytes())
				lingerClose(c, st.stream)
				return
			case errors.Is(err, io.EOF):
			default:
				s.log.Info("connection closed", "remote", st.remote, "reason", "reading request: "+describeNetErr(err))
			}
			st.stream.Close()
			return
		}
		if a.forwardedFor && !s.forwardedClient(st, req, lateXFF) {
			shed(c)
			return
		}
		lateXFF = false
		if ua := req.get("User-Agent"); ua != "" {
			st.userAgent = ua
		}
		if req.method == "CONNECT" {
			if sess, t := s.handleConnect(st, req, c); t != nil {
				// A fresh goroutine's stack starts small; this one's was grown by the TLS handshake and the
				// login, and the collector would not shrink it back while the session lasts.
				tunnel = true
				go s.serveTunnel(c, remote, st, sess, t)
			}
			return
		}
		resp := s.handleHTTP(st, req)
		if _, err := st.stream.Write(resp.bytes()); err != nil || resp.close {
			st.stream.Close()
			return
		}
		st.idle()
	}
	s.log.Info("connection closed", "remote", st.remote, "reason", fmt.Sprintf("more than %d requests", maxRequestsPerConn))
	st.stream.Close()
}

// serveTunnel runs the tunnel connection c carries until it ends (runTunnel).
func (s *Server) serveTunnel(c net.Conn, remote netip.AddrPort, st *connState, sess *Session, t *tunnel) {
	defer s.untrack(c)
	defer func() { s.connPanicked(c, remote, recover()) }()
	s.runTunnel(st, sess, t)
}

// connPanicked logs a panic p (nil: none) of a connection's goroutine and closes the connection.
func (s *Server) connPanicked(c net.Conn, remote netip.AddrPort, p any) {
	if p != nil {
		s.log.Error("panic serving connection", "remote", remote, "panic", p, "stack", string(debug.Stack()))
		c.Close()
	}
}

// handshakeFailed logs a failed TLS handshake and scores it ban_points_connection on top of the connection's
// own points, so that one address flooding random bytes or unfinished handshakes is banned. A connection closed
// before it sent anything (a load balancer's health check) scores only as a connection.
func (s *Server) handshakeFailed(remote netip.AddrPort, err error) {
	s.log.Info("connection closed", "remote", remote, "reason", "TLS handshake failed: "+describeNetErr(err))
	if errors.Is(err, io.EOF) {
		return
	}
	if s.addBanPoints(remote.Addr(), s.conf().BanPointsConnection, time.Now()) {
		s.log.Warn("address banned", "remote", remote.Addr(), "for", s.cfg.BanTime, "after", "failed TLS handshakes")
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// lingerClose closes after an error reply to a client that may still be sending (an oversized request): closing
// with unread input would make the kernel send a reset that can destroy the reply before the client reads it.
func lingerClose(raw, stream net.Conn) {
	if cw, ok := stream.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else if cw, ok := rawConn(raw).(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, raw, 1<<20)
	stream.Close()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
