package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"
)

// httpConn is the HTTP/1.1 side of a session: the auth POSTs and the CONNECT share one keep-alive TLS connection,
// as with openconnect; a new one is opened when the server asked to close.
type httpConn struct {
	opts        *Options
	addr, host  string // host:port to dial; Host header
	tlsCfg      *tls.Config
	start       time.Time
	groupAccess string
	cookies     *cookieJar

	conn        *tls.Conn
	br          *bufio.Reader
	peer, local netip.AddrPort
	stopCancel  func() bool // stops the ctx watcher of the current connection
	tTCP, tTLS  time.Duration
	keep        bool // the connection now belongs to the Session
	redial      bool // the server said Connection: close
}

func (h *httpConn) dial(ctx context.Context) error {
	dial := h.opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", h.addr)
	if err != nil {
		return &Error{"tcp", err}
	}
	if h.tTCP == 0 {
		h.tTCP = time.Since(h.start)
	}
	c := tls.Client(raw, h.tlsCfg)
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return &Error{"tls", err}
	}
	if h.tTLS == 0 {
		h.tTLS = time.Since(h.start)
	}
	if h.conn != nil {
		h.stopCancel()
		h.conn.Close()
	}
	h.conn, h.br, h.redial = c, bufio.NewReaderSize(c, 64<<10), false
	h.peer, _ = netip.ParseAddrPort(raw.RemoteAddr().String())
	h.local, _ = netip.ParseAddrPort(raw.LocalAddr().String())
	h.peer = netip.AddrPortFrom(h.peer.Addr().Unmap(), h.peer.Port())
	h.local = netip.AddrPortFrom(h.local.Addr().Unmap(), h.local.Port())
	h.stopCancel = context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	return nil
}

// release hands the connection over to the session: no more ctx watcher, no deadline.
func (h *httpConn) release(ctx context.Context) error {
	if !h.stopCancel() {
		return ctx.Err()
	}
	h.conn.SetDeadline(time.Time{})
	h.keep = true
	return nil
}

type response struct {
	code   int
	status string
	header [][2]string
	body   []byte
}

func (r *response) get(name string) string {
	for _, kv := range r.header {
		if strings.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return ""
}

func (r *response) all(name string) []string {
	var v []string
	for _, kv := range r.header {
		if strings.EqualFold(kv[0], name) {
			v = append(v, kv[1])
		}
	}
	return v
}

// roundTrip sends one request (written in one TLS write) and reads the response.
func (h *httpConn) roundTrip(ctx context.Context, stage, method, target string, hdr [][2]string, body []byte) (*response, error) {
	if h.redial {
		if err := h.dial(ctx); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", method, target, h.host, h.opts.UserAgent)
	for _, kv := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	if method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/xml; charset=utf-8\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := h.conn.Write(b.Bytes()); err != nil {
		return nil, &Error{stage, ctxErr(ctx, err)}
	}
	r, err := readResponse(h.br, method)
	if err != nil {
		return nil, &Error{stage, ctxErr(ctx, err)}
	}
	if strings.EqualFold(r.get("Connection"), "close") || !strings.HasPrefix(r.status, "HTTP/1.1 ") {
		h.redial = true
	}
	return r, nil
}

// ctxErr prefers the context's error over the I/O error its cancellation caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

const maxBody = 1 << 20

func readResponse(br *bufio.Reader, method string) (*response, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("reading status line: %w", err)
	}
	r := &response{status: line}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, fmt.Errorf("malformed status line %.80q", line)
	}
	if r.code, err = strconv.Atoi(f[1]); err != nil {
		return nil, fmt.Errorf("malformed status line %.80q", line)
	}
	size := 0
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, fmt.Errorf("reading headers: %w", err)
		}
		if line == "" {
			break
		}
		if size += len(line); size > 64<<10 || len(r.header) > 500 {
			return nil, errors.New("response headers too large")
		}
		k, v, _ := strings.Cut(line, ":")
		r.header = append(r.header, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	if method == "CONNECT" && r.code == 200 {
		return r, nil // the stream is CSTP from here on
	}
	switch {
	case strings.EqualFold(r.get("Transfer-Encoding"), "chunked"):
		for {
			line, err := readLine(br)
			if err != nil {
				return nil, err
			}
			n, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(line, ";", 2)[0]), 16, 32)
			if err != nil || n < 0 || len(r.body)+int(n) > maxBody {
				return nil, fmt.Errorf("bad chunk size %.20q", line)
			}
			if n == 0 {
				for { // trailers
					if l, err := readLine(br); err != nil || l == "" {
						return r, err
					}
				}
			}
			chunk := make([]byte, n+2)
			if _, err := io.ReadFull(br, chunk); err != nil {
				return nil, err
			}
			r.body = append(r.body, chunk[:n]...)
		}
	case r.get("Content-Length") != "":
		n, err := strconv.Atoi(r.get("Content-Length"))
		if err != nil || n < 0 || n > maxBody {
			return nil, fmt.Errorf("bad Content-Length %.20q", r.get("Content-Length"))
		}
		r.body = make([]byte, n)
		if _, err := io.ReadFull(br, r.body); err != nil {
			return nil, fmt.Errorf("reading body: %w", err)
		}
	case strings.EqualFold(r.get("Connection"), "close") && r.code == 200:
		b, err := io.ReadAll(io.LimitReader(br, maxBody))
		if err != nil && len(b) == 0 {
			return nil, err
		}
		r.body = b
	}
	return r, nil
}

func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, frag...)
		if len(b) > 16<<10 {
			return "", errors.New("line too long")
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

// cookieJar keeps the cookies the server set, in order.
type cookieJar struct{ kv [][2]string }

func newCookieJar() *cookieJar { return &cookieJar{} }

func (j *cookieJar) update(r *response) {
	for _, sc := range r.all("Set-Cookie") {
		nv, _, _ := strings.Cut(sc, ";")
		name, value, ok := strings.Cut(nv, "=")
		if !ok {
			continue
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		j.kv = removeKey(j.kv, name)
		if value != "" {
			j.kv = append(j.kv, [2]string{name, value})
		}
	}
}

func removeKey(kv [][2]string, name string) [][2]string {
	out := kv[:0]
	for _, e := range kv {
		if e[0] != name {
			out = append(out, e)
		}
	}
	return out
}

func (j *cookieJar) get(name string) string {
	for _, e := range j.kv {
		if e[0] == name {
			return e[1]
		}
	}
	return ""
}

func (j *cookieJar) header() string {
	var parts []string
	for _, e := range j.kv {
		parts = append(parts, e[0]+"="+e[1])
	}
	return strings.Join(parts, "; ")
}

// The XML documents (docs/protocol.md §3.3–3.6).

const capabilities = `<capabilities><auth-method>single-sign-on-v2</auth-method>` +
	`<auth-method>single-sign-on-external-browser</auth-method></capabilities>`

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func initDoc(groupAccess, groupSelect string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<config-auth client="vpn" type="init" aggregate-auth-version="2"><version who="vpn">v9.01-3</version>`)
	b.WriteString(`<device-id>linux-64</device-id>` + capabilities)
	b.WriteString(`<group-access>` + xmlText(groupAccess) + `</group-access>`)
	if groupSelect != "" {
		b.WriteString(`<group-select>` + xmlText(groupSelect) + `</group-select>`)
	}
	b.WriteString("</config-auth>")
	return []byte(b.String())
}

type serverDoc struct {
	XMLName      xml.Name
	Type         string      `xml:"type,attr"`
	SessionToken string      `xml:"session-token"`
	Opaque       *opaqueElem `xml:"opaque"`
	Auth         *authElem   `xml:"auth"`
}

type opaqueElem struct {
	IsFor string `xml:"is-for,attr"`
	Inner string `xml:",innerxml"`
}

type authElem struct {
	ID      string    `xml:"id,attr"`
	Message string    `xml:"message"`
	Error   string    `xml:"error"`
	Form    *formElem `xml:"form"`
}

type formElem struct {
	Method string `xml:"method,attr"`
	Action string `xml:"action,attr"`
	Inputs []struct {
		Type  string `xml:"type,attr"`
		Name  string `xml:"name,attr"`
		Value string `xml:"value,attr"`
	} `xml:"input"`
	Selects []struct {
		Name    string `xml:"name,attr"`
		Options []struct {
			Value    string `xml:"value,attr"`
			Selected string `xml:"selected,attr"`
			Text     string `xml:",chardata"`
		} `xml:"option"`
	} `xml:"select"`
}

func parseServerDoc(body []byte) (*serverDoc, error) {
	d := &serverDoc{}
	if err := xml.Unmarshal(body, d); err != nil {
		return nil, fmt.Errorf("malformed XML: %w", err)
	}
	if d.XMLName.Local == "auth" { // legacy root without <config-auth>
		a := &authElem{}
		if err := xml.Unmarshal(body, a); err != nil {
			return nil, fmt.Errorf("malformed XML: %w", err)
		}
		d.Auth = a
	}
	if d.Auth == nil {
		return nil, errors.New("XML response has no auth node")
	}
	return d, nil
}

// login runs the XML POST exchange and returns the webvpn cookie.
func (h *httpConn) login(ctx context.Context, urlPath string) (string, error) {
	if urlPath == "" {
		urlPath = "/"
	}
	fail := func(err error) (string, error) { return "", &Error{"auth", err} }
	doc, target := initDoc(h.groupAccess, ""), urlPath
	sentGroupInit, sentPassword, sentToken := false, false, false
	for range 10 {
		hdr := [][2]string{{"Accept", "*/*"}, {"Accept-Encoding", "identity"}, {"X-Transcend-Version", "1"},
			{"X-Aggregate-Auth", "1"}, {"X-Support-HTTP-Auth", "true"}}
		if c := h.cookies.header(); c != "" {
			hdr = append([][2]string{{"Cookie", c}}, hdr...)
		}
		r, err := h.roundTrip(ctx, "auth", "POST", target, hdr, doc)
		if err != nil {
			return "", err
		}
		h.cookies.update(r)
		if r.code == 401 || r.code == 403 {
			return fail(fmt.Errorf("%w: %w", ErrAuthFailed, &StatusError{r.code, r.status}))
		}
		if r.code != 200 {
			return fail(&StatusError{r.code, r.status})
		}
		d, err := parseServerDoc(r.body)
		if err != nil {
			return fail(err)
		}
		if d.Auth.ID == "success" || d.Type == "complete" {
			cookie := h.cookies.get("webvpn")
			if cookie == "" {
				cookie = strings.TrimSpace(d.SessionToken)
			}
			if cookie == "" {
				return fail(errors.New("login succeeded but no webvpn cookie"))
			}
			return cookie, nil
		}
		f := d.Auth.Form
		if f == nil {
			return fail(fmt.Errorf("auth id %q without a form", d.Auth.ID))
		}
		if f.Method != "" && !strings.EqualFold(f.Method, "post") {
			return fail(fmt.Errorf("form method %q", f.Method))
		}
		// The group_list select: openconnect re-sends init with <group-select> the first time it sees one.
		group := ""
		for _, s := range f.Selects {
			if s.Name == "group_list" && len(s.Options) > 0 {
				group = s.Options[0].Value
				for _, o := range s.Options {
					if o.Selected == "true" {
						group = o.Value
					}
				}
				for _, o := range s.Options {
					if h.opts.Group != "" && (o.Value == h.opts.Group || strings.EqualFold(strings.TrimSpace(o.Text), h.opts.Group)) {
						group = o.Value
					}
				}
			}
		}
		if group != "" && !sentGroupInit {
			sentGroupInit = true
			doc, target = initDoc(h.groupAccess, group), urlPath
			continue
		}
		hasPassword := false
		second := d.Auth.ID == "challenge" && h.opts.Token != nil
		secret := h.opts.Password
		if second {
			if sentToken {
				return fail(fmt.Errorf("%w: the second factor was asked again", ErrAuthFailed))
			}
			if secret, err = h.opts.Token(); err != nil {
				return fail(fmt.Errorf("token: %w", err))
			}
		}
		var fields strings.Builder
		for _, in := range f.Inputs {
			name := in.Name
			if name == "" {
				continue
			}
			var v string
			switch strings.ToLower(in.Type) {
			case "text":
				v = h.opts.User
			case "password":
				hasPassword = true
				v = secret
				switch name {
				case "answer", "whichpin", "new_password":
					name = "password"
				case "verify_pin", "verify_password":
					continue
				}
			case "hidden":
				v = in.Value
			default:
				continue
			}
			fmt.Fprintf(&fields, "<%s>%s</%s>", name, xmlText(v), name)
		}
		for _, s := range f.Selects {
			if s.Name != "group_list" && len(s.Options) > 0 {
				fmt.Fprintf(&fields, "<%s>%s</%s>", s.Name, xmlText(s.Options[0].Value), s.Name)
			}
		}
		if hasPassword && sentPassword && !second {
			msg := strings.TrimSpace(d.Auth.Error)
			if msg == "" {
				msg = strings.TrimSpace(d.Auth.Message)
			}
			return fail(fmt.Errorf("%w: %.120s", ErrAuthFailed, strings.Join(strings.Fields(msg), " ")))
		}
		if second {
			sentToken = true
		} else {
			sentPassword = sentPassword || hasPassword
		}
		var b strings.Builder
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
		b.WriteString(`<config-auth client="vpn" type="auth-reply" aggregate-auth-version="2"><version who="vpn">v9.01-3</version>`)
		b.WriteString(`<device-id>linux-64</device-id>` + capabilities)
		if d.Opaque != nil {
			fmt.Fprintf(&b, `<opaque is-for="%s">%s</opaque>`, xmlText(d.Opaque.IsFor), d.Opaque.Inner)
		}
		b.WriteString("<auth>" + fields.String() + "</auth>")
		if group != "" {
			b.WriteString("<group-select>" + xmlText(group) + "</group-select>")
		}
		b.WriteString("</config-auth>")
		doc = []byte(b.String())
		target = urlPath
		if f.Action != "" {
			if strings.HasPrefix(f.Action, "/") {
				target = f.Action
			} else if !strings.Contains(f.Action, "://") {
				target = path.Join(path.Dir(urlPath+"x"), f.Action)
			} else {
				return fail(fmt.Errorf("form action %q points elsewhere", f.Action))
			}
		}
	}
	return fail(errors.New("no success after 10 rounds"))
}

// The cipher lists openconnect 9.01 (GnuTLS) sends (docs/protocol.md §5.1).
const (
	dtlsCipherSuites   = "PSK-NEGOTIATE:OC-DTLS1_2-AES256-GCM:OC2-DTLS1_2-CHACHA20-POLY1305:OC-DTLS1_2-AES128-GCM:DHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA:AES256-SHA:AES128-SHA"
	dtls12CipherSuites = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256:DHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA:AES256-SHA:AES128-SHA"
)

// connect sends CONNECT and fills the session's parameters from the response.
func (h *httpConn) connect(ctx context.Context, s *Session) error {
	o := h.opts
	ipHdr := 20
	if h.peer.Addr().Is6() {
		ipHdr = 40
	}
	hdr := [][2]string{
		{"Cookie", "webvpn=" + s.Cookie},
		{"X-CSTP-Version", "1"},
		{"X-CSTP-Hostname", o.Hostname},
		{"X-CSTP-Base-MTU", strconv.Itoa(o.BaseMTU)},
		{"X-CSTP-MTU", strconv.Itoa(o.BaseMTU - 82 - 8 - ipHdr)},
	}
	if o.DisableIPv6 {
		hdr = append(hdr, [2]string{"X-CSTP-Address-Type", "IPv4"})
	} else {
		hdr = append(hdr, [2]string{"X-CSTP-Address-Type", "IPv6,IPv4"}, [2]string{"X-CSTP-Full-IPv6-Capability", "true"})
	}
	if o.DTLS {
		secret := make([]byte, 48)
		rand.Read(secret)
		hdr = append(hdr, [2]string{"X-DTLS-Master-Secret", strings.ToUpper(hex.EncodeToString(secret))},
			[2]string{"X-DTLS-CipherSuite", dtlsCipherSuites}, [2]string{"X-DTLS12-CipherSuite", dtls12CipherSuites})
	}
	r, err := h.roundTrip(ctx, "connect", "CONNECT", "/CSCOSSLC/tunnel", hdr, nil)
	if err != nil {
		return err
	}
	fail := func(err error) error { return &Error{"connect", err} }
	if r.code != 200 || !strings.HasPrefix(r.status, "HTTP/1.1 200 ") {
		if reason := r.get("X-Reason"); reason != "" {
			return fail(fmt.Errorf("%w (X-Reason: %.100s)", &StatusError{r.code, r.status}, reason))
		}
		return fail(&StatusError{r.code, r.status})
	}
	s.Header = map[string][]string{}
	for _, kv := range r.header {
		if strings.HasPrefix(kv[0], "X-CSTP-") || strings.HasPrefix(kv[0], "X-DTLS") {
			s.Header[kv[0]] = append(s.Header[kv[0]], kv[1])
		}
	}
	if a, err := netip.ParseAddr(r.get("X-CSTP-Address")); err == nil {
		if a.Is4() {
			s.Addr = a
		} else {
			s.Addr6 = netip.PrefixFrom(a, 128)
		}
	}
	if m, err := netip.ParseAddr(r.get("X-CSTP-Netmask")); err == nil && m.Is4() {
		s.Netmask = m
	}
	if p, err := netip.ParsePrefix(r.get("X-CSTP-Address-IP6")); err == nil {
		s.Addr6 = p
	}
	for _, v := range r.all("X-CSTP-DNS") {
		if a, err := netip.ParseAddr(v); err == nil {
			s.DNS = append(s.DNS, a)
		}
	}
	s.Routes = r.all("X-CSTP-Split-Include")
	mtu, _ := strconv.Atoi(r.get("X-CSTP-MTU"))
	if d, _ := strconv.Atoi(r.get("X-DTLS-MTU")); d > mtu {
		mtu = d
	}
	s.MTU = mtu
	if d, _ := strconv.Atoi(r.get("X-CSTP-DPD")); d > 0 {
		s.DPD = time.Duration(d) * time.Second
	}
	if mtu <= 0 {
		return fail(errors.New("no MTU received"))
	}
	if !s.Addr.IsValid() && !s.Addr6.IsValid() {
		return fail(errors.New("no IP address received"))
	}
	if err := h.release(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// pinChecker accepts openconnect's --servercert forms pin-sha256:BASE64 and sha256:HEX (of the SPKI); a prefix of
// at least 4 characters matches, as in openconnect.
func pinChecker(pin string) (func([][]byte) error, error) {
	var want string
	var enc func([]byte) string
	switch {
	case strings.HasPrefix(pin, "pin-sha256:"):
		want, enc = strings.TrimPrefix(pin, "pin-sha256:"), base64.StdEncoding.EncodeToString
	case strings.HasPrefix(strings.ToLower(pin), "sha256:"):
		want, enc = strings.ToLower(pin[len("sha256:"):]), hex.EncodeToString
	default:
		return nil, fmt.Errorf("pin %q: want pin-sha256:BASE64 or sha256:HEX", pin)
	}
	if len(want) < 4 {
		return nil, fmt.Errorf("pin %q is too short", pin)
	}
	return func(raw [][]byte) error {
		if len(raw) == 0 {
			return errors.New("no server certificate")
		}
		cert, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		if got := enc(sum[:]); !strings.HasPrefix(got, want) {
			return fmt.Errorf("server certificate pin-sha256:%s does not match %s", base64.StdEncoding.EncodeToString(sum[:]), pin)
		}
		return nil
	}, nil
}
