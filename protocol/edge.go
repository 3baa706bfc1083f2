package protocol

// The edge: what stands between the client and this server, and where the client's address comes from.
//
//	direct      client ──TLS──► Serve                          address: the TCP peer
//	balancer    client ──TLS──► balancer ──PROXY v1/v2, TLS──► Serve   (listen_proxy_proto)
//	TLS in front client ──TLS──► proxy ──[PROXY] plain HTTP──► ServeClear  (listen_clear_file, listen_clear)
//
// The accept loop classifies each connection (arrive) without reading from it. A connection whose address is its
// TCP peer is admitted there, before any work, as always (admission.go). A connection from a trusted proxy
// (trusted_proxies; every peer of a unix socket) carries the client's address inside: a PROXY header
// (listen_proxy_proto) read in the connection's own goroutine under request_timeout, or, on a clear listener
// without listen_proxy_proto, the proxy's X-Forwarded-For of the first request. Such a connection is admitted
// (bans, rate, pre-login caps) once that address is known, and from then on the address is the client's
// everywhere: logs, bans, IP_REAL, occtl, RADIUS Calling-Station-Id. A header with the LOCAL command (a
// balancer's health check, which connects and closes) names no client: the connection is served unadmitted and
// quietly, so that health checks neither score ban points against the balancer nor fill the log. With listen_proxy_proto a trusted peer that
// sends no header, and any other peer that sends one, has its connection closed with the reason logged; other
// peers connect directly as usual. The PROXY header is parsed by github.com/pires/go-proxyproto.
//
// Connections of a clear listener have no TLS session of ours: DTLS, keyed from it, is not offered on them, and
// the client runs over TLS (the proxy's) only.

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// arrival is what the accept loop decided about a new connection, before reading from it.
type arrival struct {
	conn  net.Conn       // the connection; a *proxyproto.Conn when a PROXY header is expected or refused
	peer  netip.AddrPort // the TCP peer; invalid for a unix socket
	clear bool           // plain HTTP: a proxy in front terminated TLS
	// proxy: a PROXY header is required (trusted peer) or refused (any other peer) before anything else.
	proxy bool
	// late: the client's address is inside the connection (PROXY header, X-Forwarded-For), so the connection
	// is admitted only once it is known (admitLate).
	late bool
	// forwardedFor: X-Forwarded-For is believed (a trusted peer of a clear listener without PROXY header).
	forwardedFor bool
}

// arrive classifies c, accepted on a clear listener or not.
func (s *Server) arrive(c net.Conn, clear bool) arrival {
	a := arrival{conn: c, clear: clear}
	_, unix := c.(*net.UnixConn)
	if !unix {
		a.peer = addrPortOf(c.RemoteAddr())
	}
	// The edge keys keep their value from the start, as listeners do (SetConfig); a reload reports them as needing
	// a restart.
	trusted := unix || s.cfg.Trusts(a.peer.Addr())
	switch {
	case s.cfg.ListenProxyProto:
		policy := proxyproto.REJECT
		if trusted {
			policy = proxyproto.REQUIRE
			a.late = true
		}
		a.proxy = true
		a.conn = proxyproto.NewConn(c, proxyproto.WithPolicy(policy),
			proxyproto.SetReadHeaderTimeout(s.conf().RequestTimeout))
	case clear && trusted:
		a.late, a.forwardedFor = true, true
	}
	return a
}

// errProxyHeaderMissing and errProxyHeaderRefused are the logged reasons for closing a connection at the PROXY
// header.
var (
	errProxyHeaderMissing = errors.New("no PROXY protocol header from a trusted proxy")
	errProxyHeaderRefused = errors.New("PROXY protocol header from a peer not in trusted_proxies")
)

// readProxyHeader reads the PROXY header a.conn must (or must not) start with, under deadline, and returns the
// client's address and the server's end as the header gives them (the TCP peer and local address when it gives
// none: a direct client, or a LOCAL command, which a balancer's health check sends: check says so).
func readProxyHeader(a arrival, deadline time.Time) (remote, local netip.AddrPort, check bool, err error) {
	pc := a.conn.(*proxyproto.Conn)
	pc.SetReadDeadline(deadline)
	// A zero-length Read processes the header and returns its error, without consuming the stream behind it.
	_, err = pc.Read(nil)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return remote, local, false, errProxyHeaderMissing
	case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
		return remote, local, false, errProxyHeaderRefused
	case err != nil:
		return remote, local, false, errors.New("bad PROXY protocol header: " + describeNetErr(err))
	}
	h := pc.ProxyHeader()
	check = h != nil && h.Command.IsLocal()
	return addrPortOf(pc.RemoteAddr()), addrPortOf(pc.LocalAddr()), check, nil
}

// forwardedFor returns the client address in a request's X-Forwarded-For: the last entry, the one the trusted
// proxy appended (the ones before it are the client's own claims). false: no usable entry.
func forwardedFor(req *request) (netip.Addr, bool) {
	vals := req.header.Values("X-Forwarded-For")
	if len(vals) == 0 {
		return netip.Addr{}, false
	}
	last := vals[len(vals)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	last = strings.TrimSpace(last)
	if a, err := netip.ParseAddr(last); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(last); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// admitLate admits c, tracked since its accept, once its client address is known (arrival.late): the checks of
// admit, and a place in the unauthenticated counts. false: refused; the caller closes c.
func (s *Server) admitLate(c net.Conn, addr netip.Addr) bool {
	src, ok := s.admit(addr)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.conns[c]
	if e == nil {
		s.adm.release(src)
		return false
	}
	e.src, e.unauth = src, true
	return true
}

// rawConn is the socket under c (shed sets its linger).
func rawConn(c net.Conn) net.Conn {
	if pc, ok := c.(*proxyproto.Conn); ok {
		return pc.Raw()
	}
	return c
}

// forwardedClient takes the client's address from req's X-Forwarded-For (a trusted peer of a clear listener; the
// peer's own address when the header names none). first: the connection is admitted now; otherwise a changed
// address (a proxy reusing its connection for another client) is checked against the bans. false: refused; the
// caller closes the connection.
func (s *Server) forwardedClient(st *connState, req *request, first bool) bool {
	addr, ok := forwardedFor(req)
	if !ok {
		addr = st.remote.Addr()
	}
	if first {
		st.remote = netip.AddrPortFrom(addr, 0)
		return s.admitLate(st.raw, addr)
	}
	if addr == st.remote.Addr() {
		return true
	}
	st.remote = netip.AddrPortFrom(addr, 0)
	if banned, _ := s.banned(addr, time.Now()); banned {
		s.log.Info("connection closed", "remote", addr, "reason", "banned address (X-Forwarded-For)")
		return false
	}
	return true
}

// banned is bans.Banned for a known address; an unknown one (edge.go: a unix socket's peer naming no client) is
// never banned.
func (s *Server) banned(a netip.Addr, now time.Time) (banned, first bool) {
	if !a.IsValid() {
		return false, false
	}
	return s.bans.Banned(a, now)
}

// addBanPoints is bans.Add for a known address; an unknown one scores nothing, and nothing scores while
// max_ban_score is 0 (bans disabled, as in ocserv): every store would drop the points, and the security module's
// would take a round trip to it for each connection.
func (s *Server) addBanPoints(a netip.Addr, points int, now time.Time) bool {
	return a.IsValid() && s.conf().MaxBanScore > 0 && s.bans.Add(a, points, now)
}
