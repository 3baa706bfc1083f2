package protocol

// The HTTPS front: accept TCP, handshake TLS under a deadline in the connection's own goroutine, then serve
// HTTP/1.1 requests (authentication) until a CONNECT turns the connection into a tunnel. Layered like net/http:
// Serve tracks listeners and returns ErrServerClosed after Shutdown; serveConn recovers panics so one bad client
// cannot take the process down.

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
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("ocgate: server closed")

var errSessionEnded = errors.New("session has ended")

const (
	handshakeTimeout   = 10 * time.Second
	maxRequestsPerConn = 32
)

// Options configure a Server. Config, TLSConfig, Passwords, Datapath and Pool are required.
type Options struct {
	Config    *config.Config
	TLSConfig *tls.Config // must hold the server certificate; cloned and adjusted (TLS 1.2+, one record per write)
	Passwords auth.PasswordChecker
	Datapath  datapath.Datapath
	Pool      *Pool
	Pool6     *Pool6            // nil: no IPv6 inside the tunnel
	Sessions  SessionStore      // nil = in-memory
	Cookies   auth.CookieMinter // nil = auth.RandomMinter
	Logger    *slog.Logger      // nil = slog.Default()
	Version   string            // shown in X-CSTP-Server-Name
	// Scripts runs connect_script, disconnect_script and host_update_script (see scripts.go); nil = none.
	Scripts ScriptRunner
	// DefaultDNS is pushed when the configuration names no dns: the netstack's resolver at the pool's gateway.
	// nil = no DNS server pushed (the kernel-TUN datapath has no resolver of its own).
	DefaultDNS []netip.Addr
}

// Server is an OpenConnect (AnyConnect-compatible) VPN server.
type Server struct {
	cfg      *config.Config
	tlsConf  *tls.Config
	checker  auth.PasswordChecker
	minter   auth.CookieMinter
	bans     *auth.Bans
	dp       datapath.Datapath
	pool     *Pool
	pool6    *Pool6
	sessions SessionStore
	log      *slog.Logger
	version  string
	scripts  ScriptRunner
	scriptWG sync.WaitGroup                // disconnect and host-update scripts run in the background
	dns      []netip.Addr                  // pushed when the session's configuration names none
	sessEnv  *sessionEnv                   // what the sessions use of the server
	stats    serverStats                   // counters and events for the management interface (manage.go)
	live     atomic.Pointer[config.Config] // the reloaded configuration (manage.go: SetConfig, conf)

	dtls    atomic.Pointer[dtls.Server] // set by ServeDTLS
	udpPort int                         // the DTLS port announced to clients

	nextID     atomic.Uint64
	acceptMu   sync.Mutex
	nextAccept time.Time // guarded by acceptMu (see admit)
	closing    atomic.Bool
	lastLog    atomic.Int64 // rate limit for limitedLog

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[net.Conn]bool         // guarded by mu: every open client connection; true once it is a tunnel
	connWG    sync.WaitGroup
}

// NewServer checks the options and returns a server ready to Serve.
func NewServer(o Options) (*Server, error) {
	if o.Config == nil || o.TLSConfig == nil || o.Passwords == nil || o.Datapath == nil || o.Pool == nil {
		return nil, errors.New("protocol.NewServer: Config, TLSConfig, Passwords, Datapath and Pool are required")
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
		checker:   o.Passwords,
		dp:        o.Datapath,
		pool:      o.Pool,
		pool6:     o.Pool6,
		sessions:  o.Sessions,
		log:       o.Logger,
		version:   o.Version,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]bool),
	}
	if s.sessions == nil {
		s.sessions = NewMemoryStore()
	}
	s.minter = o.Cookies
	if s.minter == nil {
		s.minter = auth.RandomMinter{}
	}
	s.bans = auth.NewBans(auth.BanConfig{MaxScore: o.Config.MaxBanScore, ResetTime: o.Config.BanResetTime, BanTime: o.Config.BanTime})
	if s.log == nil {
		s.log = slog.Default()
	}
	s.scripts = o.Scripts
	s.dns = o.DefaultDNS
	s.sessEnv = &sessionEnv{pool: s.pool, pool6: s.pool6, dp: s.dp, cookieTimeout: s.cfg.CookieTimeout,
		persistentCookies: s.cfg.PersistentCookies, endSession: s.endSession, stats: &s.stats}
	s.stats.start = time.Now()
	return s, nil
}

// ServeDTLS serves the DTLS data channel on pc until Shutdown. Call it before Serve so that the first CONNECT
// already offers DTLS.
func (s *Server) ServeDTLS(pc *net.UDPConn) error {
	d := dtls.NewServer(pc, s.log, s.cfg.DTLSFastPath)
	s.udpPort = pc.LocalAddr().(*net.UDPAddr).Port
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
func (s *Server) Bans() *auth.Bans { return s.bans }

// Sessions returns the session store (read by the management interface).
func (s *Server) Sessions() SessionStore { return s.sessions }

// Serve accepts TCP connections on ln and serves each in its own goroutine. It returns ErrServerClosed after
// Shutdown, or the first accept error that is not temporary.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
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
			if s.closing.Load() {
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
		if !s.admit(c) {
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			continue
		}
		go s.serveConn(c)
	}
}

// admit applies the cheap checks to a new connection before any TLS work: a banned address is refused (logged
// once per ban), every connection scores ban_points_connection, and rate_limit_ms paces new connections.
func (s *Server) admit(c net.Conn) bool {
	now := time.Now()
	addr := addrPortOf(c.RemoteAddr()).Addr()
	if banned, first := s.bans.Banned(addr, now); banned {
		if first {
			s.log.Warn("refusing connections from a banned address", "remote", addr)
		}
		return false
	}
	if s.bans.Add(addr, s.cfg.BanPointsConnection, now) {
		s.log.Warn("address banned", "remote", addr, "for", s.cfg.BanTime, "after", "too many connections")
		return false
	}
	if d := time.Duration(s.cfg.RateLimitMS) * time.Millisecond; d > 0 {
		s.acceptMu.Lock()
		wait := s.nextAccept.Sub(now)
		s.nextAccept = now.Add(max(wait, 0) + d)
		s.acceptMu.Unlock()
		if wait > 0 {
			time.Sleep(wait) // the accept loop's own pace: later connections wait in the kernel's backlog
		}
	}
	return true
}

// isTemporaryAcceptErr classifies resource exhaustion (EMFILE and friends) and aborted handshakes as retryable.
func isTemporaryAcceptErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	// Like ocserv, a server with max_clients connections open closes new ones at once.
	if n := s.cfg.MaxClients; n > 0 && len(s.conns) >= n {
		s.limitedLog("reached maximum client limit; connection closed", "active", len(s.conns), "remote", c.RemoteAddr())
		return false
	}
	s.conns[c] = false
	s.connWG.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
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
	for c, isTunnel := range s.conns {
		// Connections still authenticating: close them now (tunnels close themselves after TERMINATE).
		if !isTunnel {
			c.SetDeadline(time.Now())
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.connWG.Wait(); s.scriptWG.Wait(); close(done) }()
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

// markTunnel records that c now carries a tunnel (see Shutdown).
func (s *Server) markTunnel(c net.Conn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		s.conns[c] = true
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
	var info scriptInfo
	armed := sess.disconnectScriptDue()
	if armed {
		info = sess.scriptInfo()
	}
	s.sessions.Remove(sess)
	final := cstp.Disconnect
	if s.closing.Load() {
		final = cstp.Terminate
	}
	if t != nil {
		t.end(reason, final)
	}
	if port != nil {
		port.Close()
	}
	if addr.IsValid() {
		s.pool.Release(addr)
	}
	sess.mu.Lock()
	addr6 := sess.addr6
	sess.mu.Unlock()
	if addr6.IsValid() {
		s.pool6.Release(addr6)
	}
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
	remote    netip.AddrPort
	local     netip.AddrPort // the server's end of the connection (IP_REAL_LOCAL)
	tls       *tls.Conn
	batch     *batchConn // below tls: lets the tunnel writer batch syscalls
	br        *bufio.Reader
	failures  int
	userAgent string
	deviceID  string // <device-id> of the client's XML (linux-64, win, android, apple-ios...)
	group     string // <group-select> of the client's XML (openconnect --authgroup)
}

func (s *Server) serveConn(c net.Conn) {
	defer s.untrack(c)
	remote := addrPortOf(c.RemoteAddr())
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving connection", "remote", remote, "panic", p, "stack", string(debug.Stack()))
			c.Close()
		}
	}()
	bc := newBatchConn(c)
	tc := tls.Server(bc, s.tlsConf)
	c.SetDeadline(time.Now().Add(min(handshakeTimeout, s.cfg.AuthTimeout)))
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	hsStart := time.Now()
	err := tc.HandshakeContext(ctx)
	cancel()
	if err == nil {
		s.stats.handshake.observe(time.Since(hsStart))
	}
	if err != nil {
		s.log.Info("connection closed", "remote", remote, "reason", "TLS handshake failed: "+describeNetErr(err))
		c.Close()
		return
	}
	// The whole authentication phase must finish within auth_timeout.
	c.SetDeadline(time.Now().Add(s.cfg.AuthTimeout))
	// 4 KiB: header lines longer than that are read in pieces (readLine), CSTP frames pass through it.
	st := &connState{remote: remote, tls: tc, batch: bc, br: bufio.NewReaderSize(tc, 4<<10)}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		st.local = la.AddrPort()
	}
	for range maxRequestsPerConn {
		req, err := readRequest(st.br)
		if err != nil {
			var he *httpError
			switch {
			case errors.As(err, &he):
				s.log.Info("connection closed", "remote", remote, "reason", "bad request: "+he.Error())
				tc.Write(errorResponse(he.status, he.reason).bytes())
				lingerClose(c, tc)
				return
			case errors.Is(err, io.EOF):
			default:
				s.log.Info("connection closed", "remote", remote, "reason", "reading request: "+describeNetErr(err))
			}
			tc.Close()
			return
		}
		if ua := req.get("User-Agent"); ua != "" {
			st.userAgent = ua
		}
		if req.method == "CONNECT" {
			s.handleConnect(st, req, c)
			return
		}
		resp := s.handleHTTP(st, req)
		if _, err := tc.Write(resp.bytes()); err != nil || resp.close {
			tc.Close()
			return
		}
	}
	s.log.Info("connection closed", "remote", remote, "reason", fmt.Sprintf("more than %d requests", maxRequestsPerConn))
	tc.Close()
}

// lingerClose closes after an error reply to a client that may still be sending (an oversized request): closing
// with unread input would make the kernel send a reset that can destroy the reply before the client reads it.
func lingerClose(raw net.Conn, tc *tls.Conn) {
	tc.CloseWrite()
	raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, raw, 1<<20)
	tc.Close()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
