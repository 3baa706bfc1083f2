package protocol

// The CONNECT request (docs/protocol.md §5) turns an authenticated connection into a tunnel. handleConnect's
// steps, in order:
//
//	checkCookie        the path, the webvpn cookie (a session of another instance: roam, shared.go), the
//	                   login's certificate, deny_roaming, max_same_clients
//	                   ─► 401/404/503 and close
//	newTunnelFor       DPD and idle timeout (mobile or not), MTU, the frame reader, the CSTP codec
//	offerDTLS          registers the App-ID and PSK (or the legacy session) before the response goes out, with
//	                   the DTLS codec
//	attachTunnel       the session takes the tunnel (address lease and datapath port at the first CONNECT;
//	                   takeover of a previous tunnel)
//	runRouteCmds       route_add_cmd for each iroute, at the first CONNECT
//	runConnectScript   connect_script (and host_update_script) for each tunnel connection; a reconnect or a
//	                   takeover first runs disconnect_script for the connection it replaces
//	writeConnectResponse  the tunnel parameters, in one TLS write
//	runTunnel          on a fresh goroutine (serveConn's, which ran the TLS handshake and the login, exits: its
//	                   grown stack would stay with the session), readLoop there and writeLoop beside it, until
//	                   the tunnel ends; then the session waits for a reconnect (or ends, after a logout)

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"ocgate/config"
	"ocgate/protocol/compress"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

// handleConnect answers a CONNECT. It returns the tunnel the connection now carries, for runTunnel, or nil when
// the CONNECT was refused.
func (s *Server) handleConnect(st *connState, req *request, raw net.Conn) (*Session, *tunnel) {
	sess, ok := s.checkCookie(st, req)
	if !ok {
		return nil, nil
	}
	t, base := s.newTunnelFor(st, req, sess)
	dtlsHdr := s.offerDTLS(st, req, sess, t)
	if !s.attachTunnel(st, req, sess, t) {
		return nil, nil
	}
	if t.firstConnect && len(sess.pcfg.iroutes) > 0 {
		s.runRouteCmds(sess, "route-add")
	}
	if !s.runConnectScript(st, sess, t) {
		return nil, nil
	}
	s.writeConnectResponse(st, req, sess, t, raw, base, dtlsHdr)
	return sess, t
}

// refuse answers a CONNECT with an error status and closes the connection.
func (s *Server) refuse(st *connState, status int, reason, why string) {
	s.log.Info("connection closed", "remote", st.remote, "reason", "CONNECT refused: "+why)
	st.stream.Write(errorResponse(status, reason).bytes())
	st.stream.Close()
}

// checkCookie finds the session a CONNECT names; false means the CONNECT was refused.
func (s *Server) checkCookie(st *connState, req *request) (*Session, bool) {
	if req.target != "/CSCOSSLC/tunnel" {
		s.refuse(st, 404, "Not Found", fmt.Sprintf("unknown tunnel path %.64q", req.target))
		return nil, false
	}
	cookie, ok := req.cookie(cookieName)
	if !ok || cookie == "" {
		s.refuse(st, 503, "Service Unavailable", "no cookie")
		return nil, false
	}
	sess := s.sessions.Lookup(cookie)
	if sess == nil && s.cluster != nil {
		if sess, ok = s.roam(st, cookie); !ok { // a session of another instance (shared.go)
			return nil, false
		}
	}
	if sess == nil {
		s.refuse(st, 401, "Cookie is not acceptable", "unknown or expired cookie")
		return nil, false
	}
	if why := s.connectionMayNotUse(st, sess); why != "" {
		s.refuse(st, 401, "Cookie is not acceptable", why)
		return nil, false
	}
	if n := sess.ucfg.MaxSameClients; !s.sharedAdmit(sess, n) {
		s.refuse(st, 401, "Cookie is not acceptable", fmt.Sprintf("max_same_clients: user %q already has %d sessions in use", sess.User, n))
		return nil, false
	}
	return sess, true
}

// connectionMayNotUse says why this connection may not use the session's cookie ("" when it may): as ocserv, a
// session that logged in with a certificate is used only by a connection presenting that certificate (verified
// again by this connection's handshake, against the CRL in force now); with deny_roaming, only from the address
// that logged in.
func (s *Server) connectionMayNotUse(st *connState, sess *Session) string {
	if sess.certSum != nil && (st.clientCert == nil || sha256.Sum256(st.clientCert) != *sess.certSum) {
		return fmt.Sprintf("user %q logged in with a certificate this connection does not present", sess.User)
	}
	if sess.ucfg.DenyRoaming && sess.authAddr != st.remote.Addr() {
		return fmt.Sprintf("deny_roaming: cookie of %s used from another address", sess.authAddr)
	}
	return ""
}

// newTunnelFor makes the tunnel of this connection, with the session's timers and the link MTU (base) and tunnel
// MTU of the client's network.
func (s *Server) newTunnelFor(st *connState, req *request, sess *Session) (t *tunnel, base int) {
	dpd, idle := sess.ucfg.DPD, sess.ucfg.IdleTimeout
	if isMobile(req, sess) {
		dpd, idle = sess.ucfg.MobileDPD, sess.ucfg.MobileIdleTimeout
	}
	base, mtu := tunnelMTU(req, st.remote, sess.ucfg.MTU)
	// Frames are read straight from the TLS connection, which holds a decrypted record already: the request
	// reader's 4 KiB buffer would only add a copy, and it is most of an idle session's memory after the TLS and
	// DTLS state. A client that sent frames before our answer keeps it until the end.
	var in io.Reader = st.stream
	if st.br.Buffered() > 0 {
		in = st.br
	}
	st.br = nil
	t = newTunnel(sess, st.stream, st.batch, in, st.remote, mtu, dpd, idle, s.log, s.limitedLog)
	t.switchToTCP = s.conf().SwitchToTCPTimeout
	t.cstpCodec = s.chooseCodec(req.get("X-CSTP-Accept-Encoding"))
	t.compressMin = s.conf().NoCompressLimit
	t.maxDecompressed = min(base, cstp.MaxPayload)
	return t, base
}

// defaultCodecPriority is ocserv's order when a client offers both codecs (compression_algo_priority changes it).
var defaultCodecPriority = map[string]int{compress.NameLZ4: 90, compress.NameLZS: 80}

// chooseCodec picks the compression of one channel from the client's X-CSTP-Accept-Encoding or
// X-DTLS-Accept-Encoding list (docs/protocol.md §8.1): none unless compression = true, else the offered codec of
// the highest priority. Names match case-insensitively and empty items are skipped: openconnect 8.x writes the
// list with a leading comma (",oc-lz4,lzs"). deflate (stateful, CSTP only) is never chosen.
func (s *Server) chooseCodec(offer string) compress.Codec {
	if !s.conf().Compression {
		return nil
	}
	var best compress.Codec
	bestPrio := 0
	for name := range strings.SplitSeq(offer, ",") {
		c := compress.ByName(name)
		if c == nil {
			continue
		}
		prio, ok := s.conf().CompressionAlgoPriority[c.Name()]
		if !ok {
			prio = defaultCodecPriority[c.Name()]
		}
		if prio > bestPrio {
			best, bestPrio = c, prio
		}
	}
	return best
}

// codecName is the wire name of c, "" for none.
func codecName(c compress.Codec) string {
	if c == nil {
		return ""
	}
	return c.Name()
}

// offerDTLS registers the DTLS handshake the client may start (PSK-NEGOTIATE, else the legacy mode) and returns
// the response's X-DTLS headers; it lowers t.mtu by the DTLS overhead. Registered before the response goes out,
// since the ClientHello may follow within milliseconds.
func (s *Server) offerDTLS(st *connState, req *request, sess *Session, t *tunnel) (hdr []string) {
	d := s.dtls.Load()
	if d == nil || sess.ucfg.NoUDP || st.tls == nil { // st.tls nil: TLS terminated in front, nothing to key DTLS from
		return nil
	}
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	common := func() []string {
		return []string{"X-DTLS-Port: " + strconv.Itoa(s.udpPort), "X-DTLS-DPD: " + secs(t.dpd),
			"X-DTLS-Keepalive: " + secs(sess.ucfg.Keepalive)}
	}
	mtu := t.mtu
	// Set before Register: the DTLS handlers may run as soon as the client's handshake ends.
	codec := s.chooseCodec(req.get("X-DTLS-Accept-Encoding"))
	if s.conf().DTLSPSK && offersPSK(req) {
		psk, err := dtls.ExportPSK(st.tls.ConnectionState())
		if err != nil {
			s.log.Warn("no DTLS for this session", "user", sess.User, "remote", st.remote, "err", err)
		} else {
			appID := dtls.NewAppID()
			t.dtlsCodec = codec
			t.dtlsCancel = d.Register(appID, psk, nil, t.dtlsEstablished)
			mtu -= dtls.OverheadGCM
			hdr = append(common(), "X-DTLS-App-ID: "+hex.EncodeToString(appID[:]), "X-DTLS-CipherSuite: PSK-NEGOTIATE")
		}
	} else if legacy, name := dtls.LegacyOffer(req.get("X-DTLS-Master-Secret"), req.get("X-DTLS12-CipherSuite")); legacy != nil {
		sid := dtls.NewAppID()
		t.dtlsCodec = codec
		t.dtlsCancel = d.Register(sid, nil, legacy, t.dtlsEstablished)
		mtu -= dtls.OverheadGCM
		hdr = append(common(), "X-DTLS-Session-ID: "+hex.EncodeToString(sid[:]),
			"X-DTLS12-CipherSuite: "+name, "X-DTLS-MTU: "+strconv.Itoa(mtu))
	}
	if t.dtlsCodec != nil {
		hdr = append(hdr, "X-DTLS-Content-Encoding: "+t.dtlsCodec.Name())
	}
	t.mtu = mtu
	return hdr
}

// attachTunnel records the client's facts for the scripts and makes t the session's tunnel; false means the
// CONNECT was refused.
func (s *Server) attachTunnel(st *connState, req *request, sess *Session, t *tunnel) bool {
	sess.mu.Lock()
	if !sess.addr.IsValid() { // facts for the scripts, from the CONNECT that creates the device
		sess.localReal = st.local
		if hn := req.get("X-CSTP-Hostname"); config.ValidHostname(hn) {
			sess.hostname = hn
		}
		sess.deviceType = req.get("X-AnyConnect-Identifier-DeviceType")
		sess.platform = req.get("X-AnyConnect-Identifier-Platform")
		if sess.platform == "" {
			sess.platform = sess.DeviceID
		}
	}
	sess.mu.Unlock()
	// IPv6 inside the tunnel: when the pool has it, the client takes it (openconnect sends
	// "X-CSTP-Address-Type: IPv6,IPv4" and the full-capability header) and the tunnel can carry it (MTU >= 1280).
	want6 := sess.ucfg.IPv6Network.IsValid() && t.mtu >= 1280 && strings.Contains(req.get("X-CSTP-Address-Type"), "IPv6") &&
		req.get("X-CSTP-Full-IPv6-Capability") == "true"
	first, err := sess.attach(t, st.remote, want6)
	if err == nil {
		s.stats.tunnelUp(sess, t.mtu)
	}
	if err != nil {
		t.stopDTLS()
		if errors.Is(err, errSessionEnded) {
			s.refuse(st, 401, "Cookie is not acceptable", "session has ended")
		} else {
			s.log.Error("cannot start tunnel", "user", sess.User, "remote", st.remote, "err", err)
			st.stream.Write(errorResponse(503, "Service Unavailable").bytes())
			st.stream.Close()
		}
		return false
	}
	t.firstConnect = first
	if first && !s.acctStart(st, sess) {
		t.stopDTLS()
		return false
	}
	sess.mu.Lock()
	port := sess.port
	sess.mu.Unlock()
	// Published under dtlsMu, which dtlsEstablished takes before it attaches the DTLS handlers: the socket's
	// reader, which calls them, then sees the port (the client's handshake comes after our response anyway, but
	// the network is not a happens-before edge).
	t.dtlsMu.Lock()
	t.port = port
	if t.dtls.Load() == nil {
		t.carrier(datapath.CarrierTLS) // until DTLS is up
	}
	t.dtlsMu.Unlock()
	return true
}

// runConnectScript runs connect_script for each tunnel connection, as ocserv does per connection (and
// host_update_script in the background when the client named its host). A reconnect or a takeover first runs
// disconnect_script for the connection it replaces, with that connection's IP_REAL, so rules keyed on the client's
// real address follow a roaming client; the device and the tunnel address stay. false means the script refused
// the session, which has ended.
func (s *Server) runConnectScript(st *connState, sess *Session, t *tunnel) bool {
	if s.scripts == nil {
		return true
	}
	if !t.firstConnect && sess.disconnectScriptDue() {
		s.runScript(sess.scriptInfo(), "disconnect")
	}
	sess.mu.Lock()
	sess.scriptReal = sess.remote
	sess.mu.Unlock()
	info := sess.scriptInfo()
	if err := s.runScript(info, "connect"); err != nil {
		t.stopDTLS()
		s.endSession(sess, "connect script failed")
		s.refuse(st, 401, "Cookie is not acceptable", "connect script failed")
		return false
	}
	sess.mu.Lock()
	sess.scriptsDue = true
	sess.mu.Unlock()
	if info.hostname != "" {
		s.scriptWG.Add(1)
		go func() {
			defer s.scriptWG.Done()
			s.runScript(info, "host-update")
		}()
	}
	return true
}

// writeConnectResponse sends 200 CONNECTED with the tunnel's parameters; from here the connection is a tunnel.
func (s *Server) writeConnectResponse(st *connState, req *request, sess *Session, t *tunnel, raw net.Conn, base int, dtlsHdr []string) {
	sess.mu.Lock()
	addr, addr6 := sess.addr, sess.addr6
	sess.mu.Unlock()
	extra := dtlsHdr
	if t.cstpCodec != nil {
		extra = append(extra, "X-CSTP-Content-Encoding: "+t.cstpCodec.Name())
	}
	hdr := s.connectHeaders(req, sess, addr, addr6, base, t.mtu, t.dpd, t.idle, extra)
	raw.SetDeadline(time.Time{})
	s.markTunnel(raw)
	if _, err := st.stream.Write(hdr); err != nil {
		t.end("writing CONNECT response: "+describeNetErr(err), noFrame)
	}
	s.log.Info("session connected", "id", sess.ID, "user", sess.User, "ip", addr, "remote", st.remote,
		"mtu", t.mtu, "dpd", t.dpd, "user_agent", st.userAgent,
		"cstp_compression", codecName(t.cstpCodec), "dtls_compression", codecName(t.dtlsCodec))
}

// runTunnel moves the tunnel's frames until it ends, then lets the session go on without it.
func (s *Server) runTunnel(st *connState, sess *Session, t *tunnel) {
	go t.writeLoop()
	logout := t.readLoop()
	<-t.writerDone
	t.stopDTLS()
	sess.detach(t, logout)
	s.stats.tunnelDown(sess, t.reason)
	rx, tx, _, _ := sess.Stats()
	drx, dtx := sess.DTLSBytes()
	zin, zout, zbad := sess.Compressed()
	s.log.Info("session disconnected", "id", sess.ID, "user", sess.User, "ip", sess.Addr(), "remote", st.remote,
		"reason", t.reason, "rx", rx, "tx", tx, "dtls_rx", drx, "dtls_tx", dtx,
		"rx_dropped", sess.rxDropped.Load(), "tx_dropped", sess.txDropped.Load(),
		"compressed_in", zin, "compressed_out", zout, "compressed_bad", zbad,
		"duration", time.Since(t.start).Round(time.Millisecond))
}

// offersPSK reports whether the client offers the PSK-NEGOTIATE DTLS mode (docs/protocol.md §7.1).
func offersPSK(req *request) bool {
	for _, h := range []string{"X-DTLS-CipherSuite", "X-DTLS12-CipherSuite"} {
		for tok := range strings.SplitSeq(req.get(h), ":") {
			if strings.TrimSpace(tok) == "PSK-NEGOTIATE" {
				return true
			}
		}
	}
	return false
}

// isMobile tells mobile clients (mobile_dpd, mobile_idle_timeout) by the platform header of the CONNECT or the
// device id the client gave when it logged in (openconnect --os android|apple-ios).
func isMobile(req *request, sess *Session) bool {
	for _, p := range []string{req.get("X-AnyConnect-Identifier-Platform"), sess.DeviceID} {
		p = strings.ToLower(p)
		if strings.HasPrefix(p, "android") || strings.HasPrefix(p, "apple-ios") {
			return true
		}
	}
	return false
}

// tunnelMTU computes the link ("base") MTU and the tunnel MTU as ocserv does (docs/protocol.md §7.8): the link is the
// smaller of the configured MTU (the session's mtu, default 1500) and the client's X-CSTP-Base-MTU; the tunnel MTU
// leaves room for the outer IP and UDP headers. The DTLS record overhead is subtracted once DTLS is offered.
func tunnelMTU(req *request, remote netip.AddrPort, configured int) (base, mtu int) {
	base = 1500
	if configured > 0 {
		base = configured
	}
	if v, err := strconv.Atoi(req.get("X-CSTP-Base-MTU")); err == nil && v >= 1280 && v < base {
		base = v
	}
	ipOverhead := 20
	if remote.Addr().Is6() {
		ipOverhead = 40
	}
	return base, base - ipOverhead - 8
}

// connectHeaders renders the CONNECT response (docs/protocol.md §5.3). It is written in one TLS write.
func (s *Server) connectHeaders(req *request, sess *Session, addr, addr6 netip.Addr, base, mtu int, dpd, idle time.Duration, extra []string) []byte {
	cfg := s.conf() // the reloadable global keys below: a reload applies them to the next CONNECT
	uc := sess.ucfg // the per-user ones, fixed at login
	var b strings.Builder
	h := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	b.WriteString("HTTP/1.1 200 CONNECTED\r\n")
	h("X-CSTP-Version", "1")
	h("X-CSTP-Server-Name", "ocgate "+s.version)
	if uc.Hostname != "" {
		h("X-CSTP-Hostname", uc.Hostname) // the per-user hostname, as ocserv
	} else if hn := req.get("X-CSTP-Hostname"); config.ValidHostname(hn) {
		h("X-CSTP-Hostname", hn)
	}
	h("X-CSTP-DPD", secs(dpd))
	if cfg.DefaultDomain != "" {
		h("X-CSTP-Default-Domain", cfg.DefaultDomain)
	}
	h("X-CSTP-Address", addr.String())
	pool, pool6 := sess.leasePools()
	h("X-CSTP-Netmask", pool.Netmask().String())
	if addr6.IsValid() {
		h("X-CSTP-Address-IP6", netip.PrefixFrom(addr6, pool6.SubnetBits()).String())
	}
	pc := &sess.pcfg
	for _, d := range pc.dns {
		if d.Is4() || addr6.IsValid() {
			h("X-CSTP-DNS", d.String()) // openconnect takes IPv6 resolvers in this header too
		}
	}
	for _, d := range uc.NBNS {
		if d.Is4() || addr6.IsValid() {
			h("X-CSTP-NBNS", d.String())
		}
	}
	all := false
	for _, r := range pc.routes {
		if r.Bits() == 0 {
			all = true
		}
	}
	all = all || len(pc.routes) == 0
	if !all {
		// Exactly the configured routes, as ocserv: a DNS server outside them gets no route of its own (the
		// administrator routes it, or the client reaches it outside the tunnel).
		for _, r := range pc.routes {
			if r.Addr().Is4() {
				h("X-CSTP-Split-Include", dottedRoute(r))
			} else if addr6.IsValid() {
				h("X-CSTP-Split-Include-IP6", r.Masked().String())
			}
		}
	}
	for _, r := range pc.noRoutes {
		if r.Addr().Is4() {
			h("X-CSTP-Split-Exclude", dottedRoute(r))
		} else if addr6.IsValid() {
			h("X-CSTP-Split-Exclude-IP6", r.Masked().String())
		}
	}
	for _, d := range uc.SplitDNS {
		h("X-CSTP-Split-DNS", d)
	}
	h("X-CSTP-Tunnel-All-DNS", strconv.FormatBool(all || uc.TunnelAllDNS))
	h("X-CSTP-Keepalive", secs(uc.Keepalive))
	if idle > 0 {
		h("X-CSTP-Idle-Timeout", secs(idle))
	} else {
		h("X-CSTP-Idle-Timeout", "none")
	}
	if st := uc.SessionTimeout; st > 0 {
		h("X-CSTP-Session-Timeout", secs(st))
	} else {
		h("X-CSTP-Session-Timeout", "none")
	}
	h("X-CSTP-Disconnected-Timeout", secs(s.conf().CookieTimeout))
	h("X-CSTP-Keep", "true")
	h("X-CSTP-TCP-Keepalive", "true")
	h("X-CSTP-License", "accept")
	// Go's TLS server cannot renegotiate: never advertise "ssl" (docs/protocol.md §9.6).
	h("X-CSTP-Rekey-Method", "none")
	h("X-CSTP-Base-MTU", strconv.Itoa(base))
	h("X-CSTP-MTU", strconv.Itoa(mtu))
	if cfg.Banner != "" {
		h("X-CSTP-Banner", strings.NewReplacer("\r", " ", "\n", " ").Replace(cfg.Banner))
	}
	for _, x := range extra {
		b.WriteString(x + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func dottedRoute(p netip.Prefix) string {
	m := ^uint32(0) << (32 - p.Bits())
	if p.Bits() == 0 {
		m = 0
	}
	return fmt.Sprintf("%s/%d.%d.%d.%d", p.Masked().Addr(), byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}
