package protocol

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
)

// fakeDatapath records what sessions send and lets the test deliver packets to them.
type fakeDatapath struct {
	mu       sync.Mutex
	sessions map[netip.Addr]*datapath.Session
	sent     chan []byte
}

func newFakeDatapath() *fakeDatapath {
	return &fakeDatapath{sessions: map[netip.Addr]*datapath.Session{}, sent: make(chan []byte, 64)}
}

func (d *fakeDatapath) Attach(s *datapath.Session) (datapath.Port, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.sessions[s.Addrs[0]]; dup {
		return nil, errors.New("address in use")
	}
	d.sessions[s.Addrs[0]] = s
	return &fakePort{d: d, s: s}, nil
}

func (d *fakeDatapath) Close() error { return nil }

func (d *fakeDatapath) session(a netip.Addr) *datapath.Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sessions[a]
}

type fakePort struct {
	d    *fakeDatapath
	s    *datapath.Session
	once sync.Once
}

func (p *fakePort) Send(pkt []byte) error {
	p.d.sent <- bytes.Clone(pkt)
	return nil
}

func (p *fakePort) Close() error {
	p.once.Do(func() {
		p.d.mu.Lock()
		delete(p.d.sessions, p.s.Addrs[0])
		p.d.mu.Unlock()
	})
	return nil
}

type fakeChecker map[string]string

func (f fakeChecker) CheckPassword(_ context.Context, user, pw string) (auth.Identity, error) {
	if want, ok := f[user]; ok && want == pw {
		return auth.Identity{User: user}, nil
	}
	return auth.Identity{}, auth.ErrBadCredentials
}

type testServer struct {
	srv  *Server
	addr string
	dp   *fakeDatapath
	log  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startTestServer(t *testing.T, edit func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.IPv4Network = netip.MustParsePrefix("10.250.77.0/24")
	cfg.DPD = 90 * time.Second
	if edit != nil {
		edit(cfg)
	}
	pool, err := NewPool(cfg.IPv4Network)
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	dp := newFakeDatapath()
	srv, err := NewServer(Options{
		Config:    cfg,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}},
		Passwords: fakeChecker{"alice": "secret"},
		Datapath:  dp,
		Pool:      pool,
		Logger:    slog.New(slog.NewTextHandler(logBuf, nil)),
		Version:   "test",

		DefaultDNS: []netip.Addr{pool.Gateway()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logBuf.String())
		}
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), dp: dp, log: logBuf}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// client is a minimal Go implementation of the client side, enough to test the server without openconnect.
type client struct {
	t    *testing.T
	conn *tls.Conn
	br   *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, br: bufio.NewReader(c)}
}

// do sends a request and returns the status line, headers and body of the response.
func (c *client) do(method, path string, hdr map[string]string, body string) (status string, h map[string][]string, respBody string) {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: test\r\nUser-Agent: Open AnyConnect VPN Agent v9.01-3\r\n", method, path)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != "" || method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/xml\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return c.readResponse()
}

func (c *client) readResponse() (status string, h map[string][]string, body string) {
	c.t.Helper()
	line, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading status line: %v", err)
	}
	status = strings.TrimRight(line, "\r\n")
	h = map[string][]string{}
	n := 0
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading headers: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ": ")
		h[k] = append(h[k], v)
		if k == "Content-Length" {
			fmt.Sscan(v, &n)
		}
	}
	if strings.HasPrefix(status, "HTTP/1.1 200 CONNECTED") {
		return status, h, ""
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return status, h, string(buf)
}

func (c *client) login(user, pw string) string {
	c.t.Helper()
	status, _, body := c.do("POST", "/", nil, ocInit)
	if status != "HTTP/1.1 200 OK" || !strings.Contains(body, `name="password"`) {
		c.t.Fatalf("init: %s\n%s", status, body)
	}
	reply := strings.Replace(ocReply, "<username>alice</username><password>p&amp;ss&lt;w</password>",
		"<username>"+user+"</username><password>"+pw+"</password>", 1)
	status, h, body := c.do("POST", "/auth", nil, reply)
	if status != "HTTP/1.1 200 OK" || !strings.Contains(body, `<auth id="success">`) {
		c.t.Fatalf("auth-reply: %s\n%s", status, body)
	}
	for _, sc := range h["Set-Cookie"] {
		if v, ok := strings.CutPrefix(sc, "webvpn="); ok {
			v, _, _ = strings.Cut(v, ";")
			return v
		}
	}
	c.t.Fatalf("no webvpn cookie in %v", h)
	return ""
}

func (c *client) connect(cookie string) (string, map[string][]string) {
	c.t.Helper()
	status, h, _ := c.do("CONNECT", "/CSCOSSLC/tunnel", map[string]string{"Cookie": "webvpn=" + cookie, "X-CSTP-Base-MTU": "1500"}, "")
	return status, h
}

func (c *client) sendFrame(typ byte, payload []byte) {
	c.t.Helper()
	f := newFrame(typ, payload)
	defer f.release()
	if _, err := c.conn.Write(f.b[:f.n]); err != nil {
		c.t.Fatalf("sending frame: %v", err)
	}
}

func (c *client) readFrame() (byte, []byte, error) {
	buf := make([]byte, cstp.HeaderLen+cstp.MaxPayload)
	typ, p, err := cstp.ReadFrame(c.br, &buf)
	return typ, bytes.Clone(p), err
}

func ipv4Packet(src, dst netip.Addr, payload string) []byte {
	p := make([]byte, 20+len(payload))
	p[0] = 0x45
	p[2], p[3] = byte(len(p)>>8), byte(len(p))
	p[8], p[9] = 64, 17
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	copy(p[20:], payload)
	return p
}

func TestLoginConnectAndTraffic(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) {
		c.Routes = []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}
		c.Banner = "Welcome"
	})
	c := dialClient(t, ts.addr)
	cookie := c.login("alice", "secret")
	if strings.ContainsAny(cookie, "=;") || len(cookie) < 22 {
		t.Fatalf("cookie %q: want >= 128 bits without '=' or ';'", cookie)
	}
	status, h := c.connect(cookie)
	if status != "HTTP/1.1 200 CONNECTED" {
		t.Fatalf("CONNECT: %s", status)
	}
	for k, want := range map[string]string{
		"X-CSTP-Netmask": "255.255.255.0", "X-CSTP-MTU": "1472", "X-CSTP-DNS": "10.250.77.1",
		"X-CSTP-Split-Include": "10.77.0.0/255.255.255.0", "X-CSTP-Banner": "Welcome", "X-CSTP-Rekey-Method": "none",
	} {
		if got := h[k]; len(got) == 0 || got[0] != want {
			t.Errorf("%s = %v, want %s", k, got, want)
		}
	}
	addr := netip.MustParseAddr(h["X-CSTP-Address"][0])
	if !netip.MustParsePrefix("10.250.77.0/24").Contains(addr) || addr == netip.MustParseAddr("10.250.77.1") {
		t.Fatalf("address %s", addr)
	}

	// Client → datapath.
	pkt := ipv4Packet(addr, netip.MustParseAddr("10.77.0.1"), "ping")
	c.sendFrame(cstp.Data, pkt)
	select {
	case got := <-ts.dp.sent:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("datapath got % x, want % x", got, pkt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet never reached the datapath")
	}
	// Datapath → client.
	back := ipv4Packet(netip.MustParseAddr("10.77.0.1"), addr, "pong")
	ts.dp.session(addr).Deliver(back)
	typ, got, err := c.readFrame()
	if err != nil || typ != cstp.Data || !bytes.Equal(got, back) {
		t.Fatalf("client got type %d % x %v, want the delivered packet", typ, got, err)
	}
	if in := ts.srv.Sessions().All()[0].Info(); in.User != "alice" || in.Addr != addr || !in.Connected ||
		in.Channel != "CSTP" || in.RxBytes != uint64(len(pkt)) || in.TxBytes != uint64(len(back)) || in.CookieState != "active" {
		t.Fatalf("session info %+v", in)
	}
	// DPD requests are echoed in full.
	c.sendFrame(cstp.DPDReq, []byte("probe-1234"))
	typ, got, err = c.readFrame()
	if err != nil || typ != cstp.DPDResp || string(got) != "probe-1234" {
		t.Fatalf("DPD: type %d %q %v", typ, got, err)
	}
}

func TestConnectCookieChecks(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialClient(t, ts.addr)
	if status, _, _ := c.do("CONNECT", "/CSCOSSLC/tunnel", nil, ""); status != "HTTP/1.1 503 Service Unavailable" {
		t.Errorf("CONNECT without cookie: %s", status)
	}
	c = dialClient(t, ts.addr)
	if status, _ := c.connect(auth.NewCookie()); status != "HTTP/1.1 401 Cookie is not acceptable" {
		t.Errorf("CONNECT with a forged cookie: %s", status)
	}
}

func TestWrongPasswordShowsLoginFailed(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialClient(t, ts.addr)
	c.do("POST", "/", nil, ocInit)
	reply := strings.Replace(ocReply, "p&amp;ss&lt;w", "wrong", 1)
	status, _, body := c.do("POST", "/auth", nil, reply)
	if status != "HTTP/1.1 200 OK" || !strings.Contains(body, "<error>Login failed.</error>") {
		t.Fatalf("wrong password: %s\n%s", status, body)
	}
	c.do("POST", "/auth", nil, reply)
	status, _, _ = c.do("POST", "/auth", nil, reply)
	if status != "HTTP/1.1 401 Authentication failed" {
		t.Fatalf("third failure: %s", status)
	}
	if !strings.Contains(ts.log.String(), `msg="auth failure" user=alice`) {
		t.Fatalf("no auth failure logged:\n%s", ts.log.String())
	}
}

func TestTakeoverKeepsAddress(t *testing.T) {
	ts := startTestServer(t, nil)
	c1 := dialClient(t, ts.addr)
	cookie := c1.login("alice", "secret")
	_, h1 := c1.connect(cookie)
	c2 := dialClient(t, ts.addr)
	status, h2 := c2.connect(cookie)
	if status != "HTTP/1.1 200 CONNECTED" || h2["X-CSTP-Address"][0] != h1["X-CSTP-Address"][0] {
		t.Fatalf("takeover: %s, address %v then %v", status, h1["X-CSTP-Address"], h2["X-CSTP-Address"])
	}
	typ, _, err := c1.readFrame()
	if err != nil || typ != cstp.Disconnect {
		t.Fatalf("old tunnel got type %d, %v; want DISCONNECT", typ, err)
	}
	addr := netip.MustParseAddr(h2["X-CSTP-Address"][0])
	ts.dp.session(addr).Deliver(ipv4Packet(netip.MustParseAddr("10.77.0.1"), addr, "x"))
	if typ, _, err := c2.readFrame(); err != nil || typ != cstp.Data {
		t.Fatalf("new tunnel: type %d, %v", typ, err)
	}
	// The replaced client says goodbye (a logout) on its old tunnel as it leaves, possibly after the takeover:
	// that must not end the session its successor uses.
	sess := ts.srv.Sessions().All()[0]
	sess.detach(&tunnel{}, true)
	if ts.srv.Sessions().Len() != 1 || !sess.Connected() {
		t.Fatal("a logout from a replaced tunnel ended the session")
	}
}

func TestLogoutInvalidatesCookie(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialClient(t, ts.addr)
	cookie := c.login("alice", "secret")
	c.connect(cookie)
	c.sendFrame(cstp.Disconnect, append([]byte{cstp.DisconnectUser}, "Aborted by caller"...))
	waitFor(t, 5*time.Second, func() bool { return ts.srv.Sessions().Len() == 0 }, "session to end after logout")
	c2 := dialClient(t, ts.addr)
	if status, _ := c2.connect(cookie); status != "HTTP/1.1 401 Cookie is not acceptable" {
		t.Fatalf("cookie after logout: %s", status)
	}
}

func TestDroppedConnectionKeepsCookie(t *testing.T) {
	ts := startTestServer(t, nil)
	c := dialClient(t, ts.addr)
	cookie := c.login("alice", "secret")
	_, h := c.connect(cookie)
	c.conn.Close()
	c2 := dialClient(t, ts.addr)
	status, h2 := c2.connect(cookie)
	if status != "HTTP/1.1 200 CONNECTED" || h2["X-CSTP-Address"][0] != h["X-CSTP-Address"][0] {
		t.Fatalf("reconnect: %s %v", status, h2["X-CSTP-Address"])
	}
}

func TestBadFrameEndsOnlyThatTunnel(t *testing.T) {
	ts := startTestServer(t, nil)
	good := dialClient(t, ts.addr)
	_, gh := good.connect(good.login("alice", "secret"))
	bad := dialClient(t, ts.addr)
	bad.connect(bad.login("alice", "secret"))
	bad.conn.Write([]byte("STF\x02garbage-garbage"))
	if _, _, err := bad.readFrame(); err == nil {
		t.Fatal("bad tunnel still open")
	}
	addr := netip.MustParseAddr(gh["X-CSTP-Address"][0])
	good.sendFrame(cstp.DPDReq, []byte("alive?"))
	if typ, p, err := good.readFrame(); err != nil || typ != cstp.DPDResp || string(p) != "alive?" {
		t.Fatalf("good tunnel after a bad one: %d %q %v", typ, p, err)
	}
	if !ts.srv.Sessions().All()[0].Connected() && ts.dp.session(addr) == nil {
		t.Fatal("good session gone")
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "protocol error") }, "the protocol error in the log")
}

func TestDeadPeerIsDropped(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.DPD = time.Second })
	c := dialClient(t, ts.addr)
	c.connect(c.login("alice", "secret"))
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Say nothing: the server sends a DPD request after 2×DPD and drops the tunnel after 3×DPD.
	typ, _, err := c.readFrame()
	if err != nil || typ != cstp.DPDReq {
		t.Fatalf("first frame: type %d, %v; want a DPD request", typ, err)
	}
	if _, _, err := c.readFrame(); err == nil {
		t.Fatal("tunnel still open after 3×DPD of silence")
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "DPD timeout") }, "DPD timeout in the log")
	if ts.srv.Sessions().Len() != 1 {
		t.Fatal("the session (cookie) must survive a DPD timeout")
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
