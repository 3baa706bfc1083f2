package protocol

// What the management interface (ocgate ctl, /metrics) reads of a session: one snapshot with every fact occtl
// shows, taken under the session's lock; the byte counters are the tunnel's own atomics.

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"net/netip"
	"strings"
	"time"
)

// SessionInfo is a snapshot of a session for the management interface.
type SessionInfo struct {
	ID        uint64
	User      string
	Groups    []string
	Addr      netip.Addr     // tunnel address (invalid before the first CONNECT)
	Addr6     netip.Addr     // tunnel IPv6 address, if any
	Gateway   netip.Addr     // the server's end of the tunnel (P-t-P IPv4)
	Gateway6  netip.Addr     // the server's IPv6 end, if any
	Remote    netip.AddrPort // client address of the latest connection
	LocalReal netip.AddrPort // the server's end of the first tunnel's TCP connection
	UserAgent string
	DeviceID  string
	Hostname  string // X-CSTP-Hostname of the first CONNECT
	Device    string // the datapath's device name (kernel TUN); "" in netstack mode
	Created   time.Time
	// ConnectedAt is when the first tunnel came up (zero before the first CONNECT).
	ConnectedAt time.Time
	// SafeID names the session without revealing its cookie: base64 of a digest of it (occtl's "Full session").
	SafeID      string
	Connected   bool   // a tunnel carries the session now
	Channel     string // "DTLS", "CSTP" or "" when disconnected
	DTLSCipher  string
	TLSCipher   string        // "(TLS1.3)-(X25519)-(TLS_AES_128_GCM_SHA256)"; "" when disconnected
	MTU         int           // the current tunnel's MTU; 0 when disconnected
	DPD         time.Duration // the current tunnel's DPD interval
	Keepalive   time.Duration
	RxBytes     uint64 // from the client
	TxBytes     uint64
	RxPackets   uint64
	TxPackets   uint64
	DTLSRxBytes uint64
	DTLSTxBytes uint64
	RxDropped   uint64
	TxDropped   uint64
	CookieState string // "active" (a tunnel uses it) or "waiting" (valid for cookie_timeout after the tunnel went)

	Routes, NoRoutes, IRoutes []netip.Prefix
	DNS                       []netip.Addr
	RestrictToRoutes          bool
	RestrictToPorts           string // restrict_user_to_ports in ocserv's syntax; "" = none
}

// Info returns a snapshot of the session.
func (s *Session) Info() SessionInfo {
	s.mu.Lock()
	in := SessionInfo{
		Addr: s.addr, Addr6: s.addr6, Remote: s.remote, LocalReal: s.localReal, Hostname: s.hostname,
		Device: s.device, ConnectedAt: s.connectedAt,
	}
	s.mu.Unlock()
	in.ID, in.User, in.Groups, in.UserAgent, in.DeviceID, in.Created = s.ID, s.User, s.Groups, s.UserAgent, s.DeviceID, s.Created
	in.CookieState = "waiting"
	in.RxBytes, in.TxBytes, in.RxPackets, in.TxPackets = s.Stats()
	in.DTLSRxBytes, in.DTLSTxBytes = s.DTLSBytes()
	in.RxDropped, in.TxDropped = s.rxDropped.Load(), s.txDropped.Load()
	in.SafeID = safeID(s.cookie)
	in.Keepalive = s.ucfg.Keepalive
	in.Routes, in.NoRoutes, in.IRoutes, in.DNS = s.pcfg.routes, s.pcfg.noRoutes, s.pcfg.iroutes, s.pcfg.dns
	in.RestrictToRoutes = s.pcfg.restrict
	if !s.ucfg.Ports.Empty() {
		in.RestrictToPorts = s.ucfg.Ports.String()
	}
	if s.env != nil {
		p4, p6 := s.leasePools()
		in.Gateway = p4.Gateway()
		if p6 != nil && in.Addr6.IsValid() {
			in.Gateway6 = p6.Gateway()
		}
	}
	if t := s.cur.Load(); t != nil {
		in.Connected, in.CookieState, in.Channel = true, "active", "CSTP"
		in.MTU, in.DPD = t.mtu, t.dpd
		if tc, ok := t.conn.(*tls.Conn); ok {
			in.TLSCipher = tlsCipherName(tc.ConnectionState())
		}
		if c := t.dtls.Load(); c != nil {
			in.DTLSCipher = c.CipherSuite()
			if t.dtlsActive.Load() {
				in.Channel = "DTLS"
			}
		}
	}
	return in
}

// safeID is occtl's "Full session": a digest of the cookie, safe to show and to type back (terminate session).
func safeID(cookie string) string {
	sum := sha256.Sum256([]byte("ocgate session id\x00" + cookie))
	return base64.StdEncoding.EncodeToString(sum[:20])
}

// tlsCipherName renders a TLS connection's parameters the way occtl shows GnuTLS's:
// (TLS1.3)-(X25519)-(TLS_AES_128_GCM_SHA256).
func tlsCipherName(cs tls.ConnectionState) string {
	v := strings.ReplaceAll(tls.VersionName(cs.Version), " ", "")
	parts := []string{"(" + v + ")"}
	if cs.CurveID != 0 {
		parts = append(parts, "("+cs.CurveID.String()+")")
	}
	parts = append(parts, "("+tls.CipherSuiteName(cs.CipherSuite)+")")
	return strings.Join(parts, "-")
}
