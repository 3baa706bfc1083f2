// Package client is the client side of the OpenConnect (AnyConnect-compatible) protocol written in Go, speaking it
// the way the stock openconnect 9 client does (docs/protocol.md): XML POST authentication
// (init, then auth-reply to every form until <auth id="success">), the webvpn cookie, CONNECT /CSCOSSLC/tunnel with
// openconnect's X-CSTP-*/X-DTLS-* headers, CSTP frames on the TLS stream, and DTLS 1.2 PSK (PSK-NEGOTIATE: key from
// the TLS exporter "EXPORTER-openconnect-psk", App-ID in the ClientHello session_id).
//
// A Session carries raw IP packets (WritePacket/ReadPacket, or SetHandler); it answers DPD requests on both
// channels by itself. NewNet puts a user-space gVisor TCP/IP stack on top of a session for real TCP/UDP through
// the tunnel. It is meant for load generation and as a programmable client in tests; it talks only to the host of
// Options.URL (TCP to its port, UDP to the X-DTLS-Port the server names on that same address).
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/protocol/cstp"
)

const defaultUserAgent = "Open AnyConnect VPN Agent v9.01-3"

// Options describe one session.
type Options struct {
	URL      string // https://host[:port]/[group path]
	User     string
	Password string
	Group    string // value (or label) chosen in a group_list select, if the server shows one
	Cookie   string // if set, skip authentication and CONNECT with this webvpn cookie value
	// Token, if set, answers a second-factor form (auth id "challenge": a one-time password, a RADIUS
	// Access-Challenge), as openconnect's --token-mode does; called once per such form. Without it such a form
	// gets Password, like any password form. A client certificate goes in TLSConfig.Certificates.
	Token func() (string, error)

	InsecureSkipVerify bool   // accept any server certificate (unless Pin is set)
	Pin                string // "pin-sha256:BASE64" or "sha256:HEX" of the server's SubjectPublicKeyInfo
	TLSConfig          *tls.Config

	DTLS        bool          // offer PSK-NEGOTIATE and run the DTLS handshake
	RequireDTLS bool          // fail Dial if DTLS cannot be established (otherwise the session stays on CSTP)
	DTLSTimeout time.Duration // DTLS handshake bound (default 12 s, openconnect's)
	UDPBuffer   int           // SO_RCVBUF/SO_SNDBUF of the DTLS socket (default 4 MiB, capped by net.core.[rw]mem_max; <0: system default)
	PionRecords bool          // application records through pion\'s record layer too (slower; default: our own for GCM/ChaCha20)

	UserAgent   string // default "Open AnyConnect VPN Agent v9.01-3"
	Hostname    string // X-CSTP-Hostname (default "loadgen")
	BaseMTU     int    // X-CSTP-Base-MTU (default 1500)
	DisableIPv6 bool   // X-CSTP-Address-Type: IPv4 only (openconnect --disable-ipv6)

	QueueLen int // received packets kept for ReadPacket when no handler is set (default 256; overflow is dropped)

	// Dial opens the TCP connection (default net.Dialer). It is given the host:port of URL.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// OnControl, if set, sees every received packet that is not DATA (DPD requests and responses, keepalives,
	// DISCONNECT...), on either channel, before the client handles it. It runs on the reader goroutines and must
	// not keep payload after it returns. For tests that check what a server sends.
	OnControl func(typ byte, payload []byte)
}

// Timing records when each step of Dial finished, measured from the start of the TCP connect.
type Timing struct {
	TCP     time.Duration // TCP connected
	TLS     time.Duration // TLS handshake done
	Auth    time.Duration // cookie obtained (equal to TLS when Options.Cookie was given)
	Connect time.Duration // CONNECT answered 200
	DTLS    time.Duration // DTLS handshake done (0 without DTLS)
	Total   time.Duration // Dial returned successfully
}

// Error is a failed step of Dial. Stage is "url", "tcp", "tls", "auth", "connect" or "dtls".
type Error struct {
	Stage string
	Err   error
}

func (e *Error) Error() string { return e.Stage + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// StatusError is an unexpected HTTP status.
type StatusError struct {
	Code   int
	Status string // the whole status line
}

func (e *StatusError) Error() string { return "server answered " + strconv.Quote(e.Status) }

// ErrAuthFailed means the server refused the credentials (401, or a form with an <error> after the password).
var ErrAuthFailed = errors.New("authentication failed")

// ErrClosed is the reason of a session ended by Close or Drop.
var ErrClosed = errors.New("session closed")

// DisconnectError is a DISCONNECT or TERMINATE frame from the server.
type DisconnectError struct {
	Type    byte
	Payload []byte
}

func (e *DisconnectError) Error() string {
	name := "DISCONNECT"
	if e.Type == cstp.Terminate {
		name = "TERMINATE"
	}
	if len(e.Payload) > 0 {
		return fmt.Sprintf("server sent %s % x", name, e.Payload[:min(len(e.Payload), 32)])
	}
	return "server sent " + name
}

// Stats are a session's packet counters.
type Stats struct {
	TxPackets            uint64 `json:"tx_packets"` // DATA packets sent (both channels)
	TxBytes              uint64 `json:"tx_bytes"`
	RxPackets            uint64 `json:"rx_packets"` // DATA packets received (both channels)
	RxBytes              uint64 `json:"rx_bytes"`
	DTLSTx               uint64 `json:"dtls_tx_packets"` // DATA packets sent over DTLS
	DTLSRx               uint64 `json:"dtls_rx_packets"`
	RxDropped            uint64 `json:"rx_dropped"`     // received DATA dropped: ReadPacket queue full, or compressed (not negotiated)
	DPDAnswered          uint64 `json:"dpd_answered"`   // DPD requests from the server answered (both channels)
	DTLSFallbacks        uint64 `json:"dtls_fallbacks"` // DTLS write failures that moved sending to CSTP
	CSTPWriteErrors      uint64 `json:"cstp_write_errors"`
	ServerDPDSeenOnDTLS  uint64 `json:"server_dpd_dtls"`
	ServerDPDSeenOnCSTP  uint64 `json:"server_dpd_cstp"`
	UnknownFramesIgnored uint64 `json:"unknown_frames"`
}

// Session is an established tunnel.
type Session struct {
	// Parameters from the CONNECT response.
	Addr      netip.Addr   // X-CSTP-Address (IPv4) (may be invalid if the server gave only IPv6)
	Netmask   netip.Addr   // X-CSTP-Netmask
	Addr6     netip.Prefix // X-CSTP-Address-IP6, if any
	MTU       int          // max(X-CSTP-MTU, X-DTLS-MTU)
	DNS       []netip.Addr // X-CSTP-DNS
	Routes    []string     // X-CSTP-Split-Include values as sent
	DPD       time.Duration
	Cookie    string
	Header    map[string][]string // all X-CSTP-*/X-DTLS* response headers, names as sent
	Timing    Timing
	DTLSUsed  string // negotiated DTLS cipher suite, "" without DTLS
	DTLSError error  // why DTLS was not established (Options.DTLS without RequireDTLS)

	opts   Options
	conn   *tls.Conn
	br     *bufio.Reader
	peer   netip.AddrPort // TCP peer
	local  netip.AddrPort // TCP local address
	mu     sync.Mutex     // guards dtls while it starts
	dtls   *dtlsChan
	dtlsOK atomic.Bool

	hmu     sync.Mutex
	handler atomic.Pointer[func([]byte)]
	rxq     chan []byte

	done      chan struct{}
	endOnce   sync.Once
	endErr    error // set before done is closed
	closing   atomic.Bool
	readersWG sync.WaitGroup

	txPackets, txBytes, rxPackets, rxBytes, dtlsTx, dtlsRx, rxDropped, dpdAnswered atomic.Uint64
	dtlsFallbacks, cstpWriteErrs, dpdDTLS, dpdCSTP, unknown                        atomic.Uint64
}

// Dial logs in (unless Options.Cookie is set), sends CONNECT and, with Options.DTLS, establishes DTLS. The whole
// exchange is bounded by ctx; give it a deadline.
func Dial(ctx context.Context, o Options) (*Session, error) {
	start := time.Now()
	if o.UserAgent == "" {
		o.UserAgent = defaultUserAgent
	}
	if o.Hostname == "" {
		o.Hostname = "loadgen"
	}
	if o.BaseMTU == 0 {
		o.BaseMTU = 1500
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 256
	}
	if o.UDPBuffer == 0 {
		o.UDPBuffer = 4 << 20
	}
	if o.DTLSTimeout <= 0 {
		o.DTLSTimeout = 12 * time.Second
	}
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, &Error{"url", fmt.Errorf("want https://host[:port]/, got %q", o.URL)}
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	hostHdr := host
	if strings.Contains(host, ":") {
		hostHdr = "[" + host + "]"
	}
	if port != "443" {
		hostHdr += ":" + port
	}
	tlsCfg, err := o.tlsConfig(host)
	if err != nil {
		return nil, &Error{"url", err}
	}
	h := &httpConn{opts: &o, addr: net.JoinHostPort(host, port), host: hostHdr, tlsCfg: tlsCfg, start: start,
		groupAccess: o.URL, cookies: newCookieJar()}
	defer func() {
		if h.conn != nil && !h.keep {
			h.conn.Close()
		}
	}()
	if err := h.dial(ctx); err != nil {
		return nil, err
	}
	s := &Session{opts: o, done: make(chan struct{}), rxq: make(chan []byte, o.QueueLen)}
	s.Timing.TCP, s.Timing.TLS = h.tTCP, h.tTLS
	cookie := o.Cookie
	if cookie == "" {
		if cookie, err = h.login(ctx, u.Path); err != nil {
			return nil, err
		}
	}
	s.Cookie = cookie
	s.Timing.Auth = time.Since(start)
	if err := h.connect(ctx, s); err != nil {
		return nil, err
	}
	s.Timing.Connect = time.Since(start)
	s.conn, s.br, s.peer, s.local = h.conn, h.br, h.peer, h.local
	s.readersWG.Add(1)
	go s.cstpReader()

	if o.DTLS {
		if err := s.startDTLS(ctx); err != nil {
			if o.RequireDTLS {
				s.Close()
				return nil, &Error{"dtls", err}
			}
			s.DTLSError = err
		} else {
			s.Timing.DTLS = time.Since(start)
		}
	}
	s.Timing.Total = time.Since(start)
	return s, nil
}

// Validate checks the URL and pin without connecting.
func (o Options) Validate() error {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("URL: want https://host[:port]/, got %q", o.URL)
	}
	_, err = o.tlsConfig(u.Hostname())
	return err
}

func (o *Options) tlsConfig(host string) (*tls.Config, error) {
	cfg := &tls.Config{}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	// One CSTP frame per TLS record (docs/protocol.md §6.2).
	cfg.DynamicRecordSizingDisabled = true
	// Key exchange as the stock client does it: openconnect 9.01 on GnuTLS 3.7 has no ML-KEM; against a Go server
	// it ends up with X25519 (its log: "(TLS1.3)-(ECDHE-X25519)-…"; ocserv picks SECP256R1). Go's default would
	// offer X25519MLKEM768, which costs both sides an ML-KEM operation per handshake (4–5% of the server's CPU
	// per session in a setup-rate profile) that no real client asks for.
	if cfg.CurvePreferences == nil {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if o.Pin != "" {
		check, err := pinChecker(o.Pin)
		if err != nil {
			return nil, err
		}
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error { return check(raw) }
	} else if o.InsecureSkipVerify {
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// DTLS reports whether packets are currently sent over DTLS.
func (s *Session) DTLS() bool { return s.dtlsOK.Load() }

// Conn is the session's TLS connection. Writing to it bypasses the client's framing: for tests of how a server
// handles what a well-behaved client never sends. One Write is one TLS record.
func (s *Session) Conn() *tls.Conn { return s.conn }

// PeerAddr is the server's TCP address.
func (s *Session) PeerAddr() netip.AddrPort { return s.peer }

// Done is closed when the session has ended; Err then tells why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (ErrClosed after Close/Drop), or nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.endErr
	default:
		return nil
	}
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	return Stats{TxPackets: s.txPackets.Load(), TxBytes: s.txBytes.Load(), RxPackets: s.rxPackets.Load(),
		RxBytes: s.rxBytes.Load(), DTLSTx: s.dtlsTx.Load(), DTLSRx: s.dtlsRx.Load(), RxDropped: s.rxDropped.Load(),
		DPDAnswered: s.dpdAnswered.Load(), DTLSFallbacks: s.dtlsFallbacks.Load(), CSTPWriteErrors: s.cstpWriteErrs.Load(),
		ServerDPDSeenOnDTLS: s.dpdDTLS.Load(), ServerDPDSeenOnCSTP: s.dpdCSTP.Load(), UnknownFramesIgnored: s.unknown.Load()}
}

// end records why the session ended (first reason wins) and tears the transports down.
func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		s.dtlsOK.Store(false)
		close(s.done)
		s.conn.Close()
		s.mu.Lock()
		d := s.dtls
		s.mu.Unlock()
		if d != nil {
			d.close()
		}
	})
}

// Close sends the logout DISCONNECT (0xb0 "Aborted by caller", as openconnect on Ctrl-C), waits (up to 2 s) for the
// server to close the connection, and closes both channels. The server has invalidated the cookie by then.
func (s *Session) Close() error {
	return s.shutdown(true)
}

// Drop closes the connections without a DISCONNECT frame (openconnect's SIGHUP): the cookie stays valid.
func (s *Session) Drop() error {
	return s.shutdown(false)
}

func (s *Session) shutdown(bye bool) error {
	var err error
	if s.closing.CompareAndSwap(false, true) && s.Err() == nil {
		if bye {
			s.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			err = s.writeCSTP(cstp.Disconnect, append([]byte{cstp.DisconnectUser}, "Aborted by caller"...))
		}
		// close_notify, like openconnect (which sends no DTLS close).
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.conn.CloseWrite()
		if bye && err == nil {
			// The server closes the connection once it has taken the DISCONNECT: after that the cookie is
			// gone, which callers (tests) may rely on. Bounded, for a server that never closes.
			select {
			case <-s.done:
			case <-time.After(2 * time.Second):
			}
		}
	}
	s.end(ErrClosed)
	waitTimeout(&s.readersWG, 5*time.Second)
	return err
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
	}
}

var framePool = sync.Pool{New: func() any { b := make([]byte, cstp.HeaderLen+cstp.MaxPayload+1); return &b }}

// writeCSTP sends one frame in one TLS record.
func (s *Session) writeCSTP(typ byte, payload []byte) error {
	if len(payload) > cstp.MaxPayload {
		return fmt.Errorf("payload of %d bytes is too large", len(payload))
	}
	bp := framePool.Get().(*[]byte)
	f := (*bp)[:cstp.HeaderLen+len(payload)]
	cstp.PutHeader(f, typ, len(payload))
	copy(f[cstp.HeaderLen:], payload)
	_, err := s.conn.Write(f)
	framePool.Put(bp)
	return err
}

// WritePacket sends one IP packet: over DTLS when it is up, otherwise (or if the DTLS write fails) over CSTP.
func (s *Session) WritePacket(pkt []byte) error {
	if len(pkt) > cstp.MaxPayload {
		return fmt.Errorf("packet of %d bytes is too large", len(pkt))
	}
	if s.dtlsOK.Load() {
		bp := framePool.Get().(*[]byte)
		rec := (*bp)[:1+len(pkt)]
		rec[0] = cstp.Data
		copy(rec[1:], pkt)
		err := s.dtls.write(rec)
		framePool.Put(bp)
		if err == nil {
			s.txPackets.Add(1)
			s.txBytes.Add(uint64(len(pkt)))
			s.dtlsTx.Add(1)
			return nil
		}
		if s.dtlsOK.CompareAndSwap(true, false) {
			s.dtlsFallbacks.Add(1)
		}
	}
	if err := s.writeCSTP(cstp.Data, pkt); err != nil {
		s.cstpWriteErrs.Add(1)
		return err
	}
	s.txPackets.Add(1)
	s.txBytes.Add(uint64(len(pkt)))
	return nil
}

// SetHandler makes every received IP packet go to fn instead of the ReadPacket queue; packets already queued are
// handed over first. fn runs on the session's reader goroutines (CSTP and DTLS: possibly concurrently) and must not
// keep pkt after it returns. SetHandler(nil) goes back to the queue.
func (s *Session) SetHandler(fn func(pkt []byte)) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if fn == nil {
		s.handler.Store(nil)
		return
	}
	s.handler.Store(&fn)
	for {
		select {
		case p := <-s.rxq:
			fn(p)
		default:
			return
		}
	}
}

// ReadPacket returns the next received IP packet (copied into buf) when no handler is set.
func (s *Session) ReadPacket(ctx context.Context, buf []byte) (int, error) {
	select {
	case p := <-s.rxq:
		return copy(buf, p), nil
	default:
	}
	select {
	case p := <-s.rxq:
		return copy(buf, p), nil
	case <-s.done:
		return 0, s.endErr
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (s *Session) deliver(p []byte, dtls bool) {
	s.rxPackets.Add(1)
	s.rxBytes.Add(uint64(len(p)))
	if dtls {
		s.dtlsRx.Add(1)
	}
	if h := s.handler.Load(); h != nil {
		(*h)(p)
		return
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if h := s.handler.Load(); h != nil {
		(*h)(p)
		return
	}
	select {
	case s.rxq <- append([]byte(nil), p...):
	default:
		s.rxDropped.Add(1)
	}
}

// cstpReader reads frames from the TLS stream until it ends.
func (s *Session) cstpReader() {
	defer s.readersWG.Done()
	buf := make([]byte, cstp.HeaderLen+cstp.MaxPayload)
	for {
		typ, p, err := cstp.ReadFrame(s.br, &buf)
		if err != nil {
			if s.closing.Load() {
				s.end(ErrClosed)
			} else {
				s.end(fmt.Errorf("CSTP: %w", err))
			}
			return
		}
		if typ != cstp.Data && s.opts.OnControl != nil {
			s.opts.OnControl(typ, p)
		}
		switch typ {
		case cstp.Data:
			s.deliver(p, false)
		case cstp.DPDReq:
			s.dpdCSTP.Add(1)
			if s.writeCSTP(cstp.DPDResp, p) == nil {
				s.dpdAnswered.Add(1)
			}
		case cstp.DPDResp, cstp.Keepalive:
		case cstp.Compressed:
			s.rxDropped.Add(1)
		case cstp.Disconnect, cstp.Terminate:
			s.end(&DisconnectError{Type: typ, Payload: append([]byte(nil), p...)})
			return
		default:
			s.unknown.Add(1)
		}
	}
}
