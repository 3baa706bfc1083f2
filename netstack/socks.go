package netstack

// SOCKS5 ingress: host applications reach the VPN clients' addresses through the stack.
//
//	host app ─► ServeSOCKS (armon/go-socks5: CONNECT only, literal addresses only, optional user/password)
//	         ─► DialClient: the destination must be an attached session's address; a TCP connection from the
//	            gateway address, made by the stack, so the client sees an ordinary connection from the server's
//	            in-pool address
//
// Nothing else is reachable through it: not the host (loopback, its own addresses), not the Internet, not pool
// addresses no session holds, not the gateway itself. The connection counts against the session's flow cap and
// is reset when the session ends.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// ErrNotClient is returned (wrapped) by DialClient for a destination that is not the address of an attached
// session.
var ErrNotClient = errors.New("not the address of a connected VPN client")

// DialClient opens a TCP connection from the gateway address to addr ("IP:port", a literal address), which must
// belong to a session attached right now; anything else fails with ErrNotClient. network is "tcp", "tcp4" or
// "tcp6". The dial gives up after 10 s, or when ctx or the stack ends. The connection counts against the
// session's flow cap and is reset when the session ends. Its CloseWrite half-closes.
func (s *Stack) DialClient(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("netstack: dial %s %s: only TCP", network, addr)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s: want a literal IP address and a port: %w", addr, err)
	}
	dst := ap.Addr().Unmap()
	if network == "tcp4" && !dst.Is4() || network == "tcp6" && !dst.Is6() {
		return nil, fmt.Errorf("netstack: dial %s %s: wrong address family", network, addr)
	}
	p := s.clientPort(dst)
	if p == nil || ap.Port() == 0 {
		return nil, fmt.Errorf("netstack: dial %s: %w", addr, ErrNotClient)
	}
	if dst.Is4() != s.cfg.Gateway.Is4() {
		return nil, fmt.Errorf("netstack: dial %s: the gateway %s has no address of that family", addr, s.cfg.Gateway)
	}
	if !p.acquireFlow() {
		return nil, fmt.Errorf("netstack: dial %s: the session has too many flows", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, tcpDialTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the stack closing ends the dial
	defer stop()
	c, ep, err := s.dialFromGateway(ctx, netip.AddrPortFrom(dst, ap.Port()))
	if err != nil {
		p.releaseFlow()
		return nil, err
	}
	cc := &clientConn{TCPConn: c, p: p, ab: aborter{ep}}
	if !p.track(cc.ab) { // the session ended meanwhile
		ep.Abort()
		p.releaseFlow()
		return nil, fmt.Errorf("netstack: dial %s: %w", addr, ErrNotClient)
	}
	return cc, nil
}

// clientPort returns the live session holding a, or nil. The gateway is never a session's address.
func (s *Stack) clientPort(a netip.Addr) *port {
	if !a.IsValid() || a == s.cfg.Gateway || s.ctx.Err() != nil {
		return nil
	}
	p := s.lookup(a)
	if p == nil || p.closed.Load() {
		return nil
	}
	return p
}

// dialFromGateway is gonet.DialTCPWithBind bound to the gateway address, keeping the endpoint (to reset the flow
// when the session ends) and closing it on every failure.
func (s *Stack) dialFromGateway(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, tcpip.Endpoint, error) {
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, nil, fmt.Errorf("netstack: dial %s: %s", dst, terr)
	}
	we, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	local := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(s.cfg.Gateway.AsSlice())}
	if terr := ep.Bind(local); terr != nil {
		ep.Close()
		return nil, nil, fmt.Errorf("netstack: dial %s: binding to the gateway %s: %s", dst, s.cfg.Gateway, terr)
	}
	remote := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}
	terr = ep.Connect(remote)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Abort()
			return nil, nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: ctx.Err()}
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		// "connection was refused" when the client reset: go-socks5 answers "connection refused" to its client.
		return nil, nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: errors.New(terr.String())}
	}
	ep.SocketOptions().SetKeepAlive(true)
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

// clientConn is a connection opened by DialClient: closing it releases the session's flow.
type clientConn struct {
	*gonet.TCPConn
	p    *port
	ab   aborter
	once sync.Once
}

func (c *clientConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() {
		c.p.untrack(c.ab)
		c.p.releaseFlow()
	})
	return err
}

// SOCKSConfig configures ServeSOCKS.
type SOCKSConfig struct {
	// User and Password, when both set, are required from SOCKS clients (RFC 1929); both empty: no authentication.
	User, Password string
	// HandshakeTimeout bounds the SOCKS negotiation (greeting, authentication, request, dial); 0 means 30 s.
	HandshakeTimeout time.Duration
}

// ServeSOCKS serves SOCKS5 on ln until ln fails or the stack closes (it then closes ln). Only CONNECT requests
// to the literal address of an attached session are served (through DialClient); names are not resolved, and
// BIND and UDP ASSOCIATE are refused. When it returns, the connections it accepted are closed. It returns nil
// when ln was closed (by the caller or by the stack closing).
func (s *Stack) ServeSOCKS(ln net.Listener, cfg SOCKSConfig) error {
	if (cfg.User == "") != (cfg.Password == "") {
		ln.Close()
		return errors.New("netstack: SOCKS5: set both User and Password, or neither")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	log := s.log.With("ingress", "socks5")
	var creds socks5.CredentialStore
	if cfg.User != "" {
		creds = newSOCKSCredentials(cfg.User, cfg.Password)
	}
	stop := context.AfterFunc(s.ctx, func() { ln.Close() })
	defer stop()

	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		done  bool
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		done = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) { // e.g. EMFILE: wait, as net/http does
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("SOCKS5 accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("netstack: SOCKS5: %w", err)
		}
		backoff = 0
		mu.Lock()
		if done {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			s.serveSOCKSConn(c, creds, cfg.HandshakeTimeout, log)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveSOCKSConn serves one SOCKS connection with a server of its own, so that its Dial can lift the handshake
// deadline once the connection to the client is up.
func (s *Stack) serveSOCKSConn(c net.Conn, creds socks5.CredentialStore, timeout time.Duration, log *slog.Logger) {
	c.SetDeadline(time.Now().Add(timeout))
	from := c.RemoteAddr().String()
	srv, err := socks5.New(&socks5.Config{
		Credentials: creds, // nil: no authentication
		Resolver:    literalResolver{},
		Rules:       clientsOnly{s: s, log: log, from: from},
		Logger:      slog.NewLogLogger(log.With("from", from).Handler(), slog.LevelDebug),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			t, err := s.DialClient(ctx, network, addr)
			if err != nil {
				log.Debug("SOCKS5 dial failed", "from", from, "dst", addr, "err", err)
				return nil, err
			}
			c.SetDeadline(time.Time{}) // relaying from now on: no deadline
			log.Debug("SOCKS5 connection", "from", from, "dst", addr)
			return t, nil
		},
	})
	if err != nil { // go-socks5's New cannot fail with this configuration
		c.Close()
		log.Error("SOCKS5 server", "err", err)
		return
	}
	srv.ServeConn(c) // closes c
}

// literalResolver accepts only IP literals (some clients send them as names): resolving names here would reach
// the host's resolver, and VPN clients have no names anyway.
type literalResolver struct{}

func (literalResolver) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	a, err := netip.ParseAddr(name)
	if err != nil || a.Zone() != "" {
		return ctx, nil, fmt.Errorf("%q: names are not resolved; give the VPN client's IP address", name)
	}
	return ctx, net.IP(a.AsSlice()), nil
}

// clientsOnly allows CONNECT to attached sessions' addresses; go-socks5 answers anything else with "connection
// not allowed by ruleset". DialClient checks the address again (the session may end in between).
type clientsOnly struct {
	s    *Stack
	log  *slog.Logger
	from string
}

func (r clientsOnly) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	if req.Command != socks5.ConnectCommand {
		r.log.Debug("SOCKS5 request refused", "from", r.from, "command", req.Command, "why", "only CONNECT is served")
		return ctx, false
	}
	a, ok := netip.AddrFromSlice(req.DestAddr.IP)
	if !ok || r.s.clientPort(a.Unmap()) == nil {
		r.log.Debug("SOCKS5 request refused", "from", r.from, "dst", req.DestAddr.String(), "why", ErrNotClient.Error())
		return ctx, false
	}
	return ctx, true
}

// socksCredentials compares in constant time (hashes first, so that the lengths do not show either).
type socksCredentials struct{ user, pass [sha256.Size]byte }

func newSOCKSCredentials(user, pass string) socksCredentials {
	return socksCredentials{sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))}
}

func (c socksCredentials) Valid(user, pass string) bool {
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(u[:], c.user[:])&subtle.ConstantTimeCompare(p[:], c.pass[:]) == 1
}
