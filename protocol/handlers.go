package protocol

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"ocgate/auth"
	"ocgate/protocol/datapath"
)

const (
	maxAuthFailuresPerConn = 3
	cookieName             = "webvpn"
)

// handleHTTP answers one request of the authentication phase (protocol.md §3).
func (s *Server) handleHTTP(st *connState, req *request) *response {
	path, _, _ := strings.Cut(req.target, "?")
	switch path {
	case "/", "/auth", "/VPN":
	case "/logout":
		return &response{status: 200, reason: "OK"} // AnyConnect compatibility: an empty page
	default:
		s.log.Info("connection closed", "remote", st.remote, "reason", fmt.Sprintf("unknown path %.64q", path))
		return errorResponse(404, "Not Found")
	}
	if req.method != "POST" && req.method != "GET" {
		return errorResponse(405, "Method Not Allowed")
	}
	doc, err := parseClientDoc(req.get("Content-Type"), req.body)
	if err != nil {
		s.log.Info("connection closed", "remote", st.remote, "reason", "bad authentication request: "+err.Error())
		return errorResponse(400, "Bad Request")
	}
	if doc.DeviceID != "" {
		st.deviceID = doc.DeviceID
	}
	if req.method == "GET" || doc.Type == "init" {
		return xmlResponse(loginForm(s.cfg.PreLoginBanner, ""))
	}
	user, password := doc.Auth.Username, doc.Auth.Password
	if user == "" || password == "" {
		return xmlResponse(loginForm(s.cfg.PreLoginBanner, "Please enter your username and password."))
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AuthTimeout)
	id, err := s.checker.CheckPassword(ctx, user, password)
	cancel()
	if err != nil {
		st.failures++
		reason := "wrong password or unknown user"
		switch {
		case errors.Is(err, auth.ErrLocked):
			reason = "account locked"
		case !errors.Is(err, auth.ErrBadCredentials):
			reason = "error: " + err.Error()
		}
		s.log.Info("auth failure", "user", user, "remote", st.remote, "reason", reason)
		if s.bans.Add(st.remote.Addr(), s.cfg.BanPointsWrongPassword, time.Now()) {
			s.log.Warn("address banned", "remote", st.remote.Addr(), "for", s.cfg.BanTime, "after", "failed logins")
			return errorResponse(401, "Authentication failed")
		}
		if st.failures >= maxAuthFailuresPerConn {
			return errorResponse(401, "Authentication failed")
		}
		// Cisco style: the same form again with an error; an interactive user is asked again, a scripted one
		// stops ("Failed to complete authentication").
		return xmlResponse(loginForm(s.cfg.PreLoginBanner, "Login failed."))
	}

	sess, err := s.newSession(id, st)
	if err != nil {
		s.log.Info("auth failure", "user", user, "remote", st.remote, "reason", err.Error())
		return xmlResponse(loginForm(s.cfg.PreLoginBanner, err.Error()))
	}
	s.log.Info("auth success", "user", user, "remote", st.remote, "id", sess.ID)
	resp := xmlResponse(successDoc(s.cfg.Banner, sess.cookie))
	resp.add("Set-Cookie", cookieName+"="+sess.cookie+"; Secure; HttpOnly")
	return resp
}

func xmlResponse(body []byte) *response {
	r := &response{status: 200, reason: "OK", body: body}
	r.add("Content-Type", "text/xml")
	r.add("X-Transcend-Version", "1")
	return r
}

// errLimit is a refusal the user is shown as is.
type errLimit string

func (e errLimit) Error() string { return string(e) }

// newSession creates the session for an authenticated user, enforcing max_clients and max_same_clients.
func (s *Server) newSession(id auth.Identity, st *connState) (*Session, error) {
	if n := s.cfg.MaxClients; n > 0 && s.sessions.Len() >= n {
		return nil, errLimit("The server has reached its maximum number of clients.")
	}
	uc, err := s.cfg.UserConfig(id.User, id.Groups)
	if err != nil {
		// An administrator's mistake in a per-user file: refuse (ocserv does too) and say where.
		s.log.Error("per-user configuration", "user", id.User, "err", err)
		return nil, errLimit("The server could not load your configuration; contact the administrator.")
	}
	for _, w := range uc.Warnings {
		s.log.Warn(w, "user", id.User)
	}
	if n := uc.MaxSameClients; n > 0 && s.sessions.CountUser(id.User) >= n {
		return nil, errLimit(fmt.Sprintf("You have reached the maximum number of sessions (%d) for this user.", n))
	}
	sess := &Session{
		ID:        s.nextID.Add(1),
		User:      id.User,
		Groups:    id.Groups,
		UserAgent: st.userAgent,
		DeviceID:  st.deviceID,
		Created:   time.Now(),
		srv:       s,
		authAddr:  st.remote.Addr(),
		rxLimit:   newTokenBucket(uc.RxDataPerSec),
		txLimit:   newTokenBucket(uc.TxDataPerSec),
		ucfg:      uc,
		pcfg: sessionPolicy{
			routes: uc.Routes, noRoutes: uc.NoRoutes, iroutes: uc.IRoutes, dns: uc.DNS,
			restrict: uc.RestrictToRoutes,
		},
	}
	if len(sess.pcfg.dns) == 0 {
		sess.pcfg.dns = s.dns
	}
	cookie, err := s.minter.MintCookie()
	if err != nil {
		return nil, fmt.Errorf("minting a cookie: %w", err)
	}
	sess.cookie = cookie
	sess.mu.Lock()
	sess.remote = st.remote
	// A cookie never used for a CONNECT expires like one whose tunnel went away.
	sess.startExpiryLocked(s.cfg.CookieTimeout)
	if d := uc.SessionTimeout; d > 0 {
		sess.sessionTimer = time.AfterFunc(d, func() { s.endSession(sess, "session timeout") })
	}
	sess.mu.Unlock()
	s.sessions.Add(sess)
	return sess, nil
}

// handleConnect checks the cookie of a CONNECT, answers with the tunnel parameters and runs the tunnel on this
// connection until it ends (protocol.md §5).
func (s *Server) handleConnect(st *connState, req *request, raw net.Conn) {
	fail := func(status int, reason, why string) {
		s.log.Info("connection closed", "remote", st.remote, "reason", "CONNECT refused: "+why)
		st.tls.Write(errorResponse(status, reason).bytes())
		st.tls.Close()
	}
	if req.target != "/CSCOSSLC/tunnel" {
		fail(404, "Not Found", fmt.Sprintf("unknown tunnel path %.64q", req.target))
		return
	}
	cookie, ok := req.cookie(cookieName)
	if !ok || cookie == "" {
		fail(503, "Service Unavailable", "no cookie")
		return
	}
	sess := s.sessions.Lookup(cookie)
	if sess == nil {
		fail(401, "Cookie is not acceptable", "unknown or expired cookie")
		return
	}
	if s.cfg.DenyRoaming && sess.authAddr != st.remote.Addr() {
		fail(401, "Cookie is not acceptable", fmt.Sprintf("deny_roaming: cookie of %s used from another address", sess.authAddr))
		return
	}

	mobile := isMobile(req, sess)
	dpd, idle := sess.ucfg.DPD, sess.ucfg.IdleTimeout
	if mobile {
		dpd, idle = sess.ucfg.MobileDPD, sess.ucfg.MobileIdleTimeout
	}
	base, mtu := s.tunnelMTU(req, st.remote)
	// Frames are read straight from the TLS connection, which holds a decrypted record already: the request
	// reader's 4 KiB buffer would only add a copy, and it is most of an idle session's memory after the TLS and
	// DTLS state. A client that sent frames before our answer keeps it until the end.
	var in io.Reader = st.tls
	if st.br.Buffered() > 0 {
		in = st.br
	}
	st.br = nil
	t := newTunnel(sess, st.tls, st.batch, in, st.remote, mtu, dpd, idle)
	t.switchToTCP = s.cfg.SwitchToTCPTimeout
	// DTLS: registered before the response goes out, since the ClientHello may follow within milliseconds.
	var dtlsHdr []string
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	if d := s.dtls.Load(); d != nil && !s.cfg.NoUDP {
		common := func() []string {
			return []string{"X-DTLS-Port: " + strconv.Itoa(s.udpPort), "X-DTLS-DPD: " + secs(dpd),
				"X-DTLS-Keepalive: " + secs(sess.ucfg.Keepalive)}
		}
		if s.cfg.DTLSPSK && offersPSK(req) {
			psk, err := exportPSK(st.tls.ConnectionState())
			if err != nil {
				s.log.Warn("no DTLS for this session", "user", sess.User, "remote", st.remote, "err", err)
			} else {
				appID := newAppID()
				t.dtlsCancel = d.register(appID, psk, nil, t.dtlsEstablished)
				mtu -= dtlsOverheadGCM
				dtlsHdr = append(common(), "X-DTLS-App-ID: "+hex.EncodeToString(appID[:]), "X-DTLS-CipherSuite: PSK-NEGOTIATE")
			}
		} else if legacy, name := legacyOffer(req); legacy != nil {
			sid := newAppID()
			t.dtlsCancel = d.register(sid, nil, legacy, t.dtlsEstablished)
			mtu -= dtlsOverheadGCM
			dtlsHdr = append(common(), "X-DTLS-Session-ID: "+hex.EncodeToString(sid[:]),
				"X-DTLS12-CipherSuite: "+name, "X-DTLS-MTU: "+strconv.Itoa(mtu))
		}
		t.mtu = mtu
	}
	sess.mu.Lock()
	if !sess.addr.IsValid() { // facts for the scripts, from the CONNECT that creates the device
		sess.localReal = st.local
		if hn := req.get("X-CSTP-Hostname"); validHostname(hn) {
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
	want6 := s.pool6 != nil && t.mtu >= 1280 && strings.Contains(req.get("X-CSTP-Address-Type"), "IPv6") &&
		req.get("X-CSTP-Full-IPv6-Capability") == "true"
	first, err := sess.attach(t, st.remote, want6)
	if err != nil {
		t.stopDTLS()
		if errors.Is(err, errSessionEnded) {
			fail(401, "Cookie is not acceptable", "session has ended")
		} else {
			s.log.Error("cannot start tunnel", "user", sess.User, "remote", st.remote, "err", err)
			st.tls.Write(errorResponse(503, "Service Unavailable").bytes())
			st.tls.Close()
		}
		return
	}
	sess.mu.Lock()
	addr, addr6, port := sess.addr, sess.addr6, sess.port
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
	if first && s.scripts != nil {
		info := sess.scriptInfo()
		if err := s.runScript(info, "connect"); err != nil {
			t.stopDTLS()
			s.endSession(sess, "connect script failed")
			fail(401, "Cookie is not acceptable", "connect script failed")
			return
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
	}

	hdr := s.connectHeaders(req, sess, addr, addr6, base, mtu, dpd, idle, dtlsHdr)
	raw.SetDeadline(time.Time{})
	s.markTunnel(raw)
	if _, err := st.tls.Write(hdr); err != nil {
		t.end("writing CONNECT response: "+describeNetErr(err), noFrame)
	}
	s.log.Info("session connected", "id", sess.ID, "user", sess.User, "ip", addr, "remote", st.remote,
		"mtu", mtu, "dpd", dpd, "user_agent", st.userAgent)

	go t.writeLoop()
	logout := t.readLoop()
	<-t.writerDone
	t.stopDTLS()
	sess.detach(t, logout)
	rx, tx, _, _ := sess.Stats()
	drx, dtx := sess.DTLSBytes()
	s.log.Info("session disconnected", "id", sess.ID, "user", sess.User, "ip", addr, "remote", st.remote,
		"reason", t.reason, "rx", rx, "tx", tx, "dtls_rx", drx, "dtls_tx", dtx,
		"rx_dropped", sess.rxDropped.Load(), "tx_dropped", sess.txDropped.Load(),
		"duration", time.Since(t.start).Round(time.Millisecond))
}

// offersPSK reports whether the client offers the PSK-NEGOTIATE DTLS mode (protocol.md §7.1).
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

// tunnelMTU computes the link ("base") MTU and the tunnel MTU as ocserv does (protocol.md §7.8): the link is the
// smaller of the configured MTU (default 1500) and the client's X-CSTP-Base-MTU; the tunnel MTU leaves room for
// the outer IP and UDP headers. The DTLS record overhead is subtracted once DTLS is offered.
func (s *Server) tunnelMTU(req *request, remote netip.AddrPort) (base, mtu int) {
	base = 1500
	if s.cfg.MTU > 0 {
		base = s.cfg.MTU
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

// connectHeaders renders the CONNECT response (protocol.md §5.3). It is written in one TLS write.
func (s *Server) connectHeaders(req *request, sess *Session, addr, addr6 netip.Addr, base, mtu int, dpd, idle time.Duration, extra []string) []byte {
	var b strings.Builder
	h := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	b.WriteString("HTTP/1.1 200 CONNECTED\r\n")
	h("X-CSTP-Version", "1")
	h("X-CSTP-Server-Name", "ocgate "+s.version)
	if hn := req.get("X-CSTP-Hostname"); validHostname(hn) {
		h("X-CSTP-Hostname", hn)
	}
	h("X-CSTP-DPD", secs(dpd))
	if s.cfg.DefaultDomain != "" {
		h("X-CSTP-Default-Domain", s.cfg.DefaultDomain)
	}
	h("X-CSTP-Address", addr.String())
	h("X-CSTP-Netmask", s.pool.Netmask().String())
	if addr6.IsValid() {
		h("X-CSTP-Address-IP6", netip.PrefixFrom(addr6, s.pool6.SubnetBits()).String())
	}
	pc := &sess.pcfg
	for _, d := range pc.dns {
		if d.Is4() || addr6.IsValid() {
			h("X-CSTP-DNS", d.String()) // openconnect takes IPv6 resolvers in this header too
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
		for _, r := range pc.routes {
			if r.Addr().Is4() {
				h("X-CSTP-Split-Include", dottedRoute(r))
			} else if addr6.IsValid() {
				h("X-CSTP-Split-Include-IP6", r.Masked().String())
			}
		}
		// The client must reach the resolver we push even when it is outside the routes.
		for _, d := range pc.dns {
			if d.Is4() && !containsAddr(pc.routes, d) {
				h("X-CSTP-Split-Include", d.String()+"/255.255.255.255")
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
	for _, d := range s.cfg.SplitDNS {
		h("X-CSTP-Split-DNS", d)
	}
	h("X-CSTP-Tunnel-All-DNS", strconv.FormatBool(all || s.cfg.TunnelAllDNS))
	h("X-CSTP-Keepalive", secs(sess.ucfg.Keepalive))
	if idle > 0 {
		h("X-CSTP-Idle-Timeout", secs(idle))
	} else {
		h("X-CSTP-Idle-Timeout", "none")
	}
	if st := sess.ucfg.SessionTimeout; st > 0 {
		h("X-CSTP-Session-Timeout", secs(st))
	} else {
		h("X-CSTP-Session-Timeout", "none")
	}
	h("X-CSTP-Disconnected-Timeout", secs(s.cfg.CookieTimeout))
	h("X-CSTP-Keep", "true")
	h("X-CSTP-TCP-Keepalive", "true")
	h("X-CSTP-License", "accept")
	// Go's TLS server cannot renegotiate: never advertise "ssl" (protocol.md §9.6).
	h("X-CSTP-Rekey-Method", "none")
	h("X-CSTP-Base-MTU", strconv.Itoa(base))
	h("X-CSTP-MTU", strconv.Itoa(mtu))
	if s.cfg.Banner != "" {
		h("X-CSTP-Banner", strings.NewReplacer("\r", " ", "\n", " ").Replace(s.cfg.Banner))
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

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}
