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
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/protocol/client"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
)

// fakeDatapath records what sessions send and lets the test deliver packets to them.
type fakeDatapath struct {
	mu       sync.Mutex
	sessions map[netip.Addr]*datapath.Session
	sent     chan []byte
	panicOn  atomic.Pointer[netip.Addr] // Send panics on a packet from this address
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
	if a := p.d.panicOn.Load(); a != nil && len(pkt) >= 20 && netip.AddrFrom4([4]byte(pkt[12:16])) == *a {
		panic("test: the datapath panics")
	}
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
	return startTestServerOpts(t, edit, nil)
}

// startTestServerOpts is startTestServer with more options set by opts.
func startTestServerOpts(t *testing.T, edit func(*config.Config), opts func(*Options)) *testServer {
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
	o := Options{
		Config:    cfg,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}},
		Passwords: fakeChecker{"alice": "secret"},
		Datapath:  dp,
		Pool:      pool,
		Logger:    slog.New(slog.NewTextHandler(logBuf, nil)),
		Version:   "test",

		DefaultDNS: []netip.Addr{pool.Gateway()},
	}
	if opts != nil {
		opts(&o)
	}
	srv, err := NewServer(o)
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

// dial runs the Go client against the test server: login (unless o.Cookie is set) and CONNECT.
func (ts *testServer) dial(t *testing.T, o client.Options) (*client.Session, error) {
	t.Helper()
	o.URL = "https://" + ts.addr + "/"
	o.InsecureSkipVerify = true
	if o.User == "" && o.Cookie == "" {
		o.User, o.Password = "alice", "secret"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, o)
	if err == nil {
		t.Cleanup(func() { s.Drop() })
	}
	return s, err
}

func (ts *testServer) mustDial(t *testing.T, o client.Options) *client.Session {
	t.Helper()
	s, err := ts.dial(t, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return s
}

// readPacket returns the next DATA packet the client received.
func readPacket(t *testing.T, s *client.Session) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, cstp.MaxPayload)
	n, err := s.ReadPacket(ctx, buf)
	if err != nil {
		t.Fatalf("ReadPacket: %v", err)
	}
	return buf[:n]
}

// waitDone waits for the server to end the client's session and returns why.
func waitDone(t *testing.T, s *client.Session) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end the tunnel")
		return nil
	}
}

func statusCode(err error) int {
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestLoginConnectAndTraffic(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) {
		c.Routes = []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}
		c.Banner = "Welcome"
	})
	control := make(chan []byte, 8)
	c := ts.mustDial(t, client.Options{OnControl: func(typ byte, p []byte) {
		if typ == cstp.DPDResp {
			control <- bytes.Clone(p)
		}
	}})
	if strings.ContainsAny(c.Cookie, "=;") || len(c.Cookie) < 22 {
		t.Fatalf("cookie %q: want >= 128 bits without '=' or ';'", c.Cookie)
	}
	for k, want := range map[string]string{
		"X-CSTP-Netmask": "255.255.255.0", "X-CSTP-MTU": "1472", "X-CSTP-DNS": "10.250.77.1",
		"X-CSTP-Split-Include": "10.77.0.0/255.255.255.0", "X-CSTP-Banner": "Welcome", "X-CSTP-Rekey-Method": "none",
	} {
		if got := c.Header[k]; len(got) == 0 || got[0] != want {
			t.Errorf("%s = %v, want %s", k, got, want)
		}
	}
	addr := c.Addr
	if !netip.MustParsePrefix("10.250.77.0/24").Contains(addr) || addr == netip.MustParseAddr("10.250.77.1") {
		t.Fatalf("address %s", addr)
	}

	// Client → datapath.
	pkt := ipv4Packet(addr, netip.MustParseAddr("10.77.0.1"), "ping")
	if err := c.WritePacket(pkt); err != nil {
		t.Fatal(err)
	}
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
	if got := readPacket(t, c); !bytes.Equal(got, back) {
		t.Fatalf("client got % x, want the delivered packet", got)
	}
	if in := ts.srv.Sessions().All()[0].Info(); in.User != "alice" || in.Addr != addr || !in.Connected ||
		in.Channel != "CSTP" || in.RxBytes != uint64(len(pkt)) || in.TxBytes != uint64(len(back)) || in.CookieState != "active" {
		t.Fatalf("session info %+v", in)
	}
	// DPD requests are echoed in full.
	if _, err := c.Conn().Write(cstp.AppendFrame(nil, cstp.DPDReq, []byte("probe-1234"))); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-control:
		if string(got) != "probe-1234" {
			t.Fatalf("DPD response %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DPD response")
	}
}

// rawConnect sends one CONNECT with the given extra header lines on a new connection and returns the status.
func rawConnect(t *testing.T, addr, hdr string) int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nHost: test\r\n"+hdr+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestConnectCookieChecks(t *testing.T) {
	ts := startTestServer(t, nil)
	t.Run("no cookie", func(t *testing.T) {
		if code := rawConnect(t, ts.addr, ""); code != 503 {
			t.Errorf("status %d, want 503", code)
		}
	})
	t.Run("forged cookie", func(t *testing.T) {
		if _, err := ts.dial(t, client.Options{Cookie: auth.NewCookie()}); statusCode(err) != 401 {
			t.Errorf("Dial: %v, want a 401", err)
		}
	})
}

// The authentication exchange at the HTTP level (net/http's client keeps the connection, so the failures add up).
func TestWrongPasswordShowsLoginFailed(t *testing.T) {
	ts := startTestServer(t, nil)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := hc.Post("https://"+ts.addr+path, "application/xml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	post("/", ocInit)
	reply := strings.Replace(ocReply, "p&amp;ss&lt;w", "wrong", 1)
	if code, body := post("/auth", reply); code != 200 || !strings.Contains(body, "<error>Login failed.</error>") {
		t.Fatalf("wrong password: %d\n%s", code, body)
	}
	post("/auth", reply)
	if code, _ := post("/auth", reply); code != 401 {
		t.Fatalf("third failure: %d", code)
	}
	if !strings.Contains(ts.log.String(), `msg="auth failure" user=alice`) {
		t.Fatalf("no auth failure logged:\n%s", ts.log.String())
	}
	if _, err := ts.dial(t, client.Options{User: "alice", Password: "wrong"}); !errors.Is(err, client.ErrAuthFailed) {
		t.Fatalf("Go client with a wrong password: %v", err)
	}
}

func TestTakeoverKeepsAddress(t *testing.T) {
	ts := startTestServer(t, nil)
	c1 := ts.mustDial(t, client.Options{})
	c2 := ts.mustDial(t, client.Options{Cookie: c1.Cookie})
	if c2.Addr != c1.Addr {
		t.Fatalf("takeover: address %s then %s", c1.Addr, c2.Addr)
	}
	var de *client.DisconnectError
	if err := waitDone(t, c1); !errors.As(err, &de) || de.Type != cstp.Disconnect {
		t.Fatalf("old tunnel ended with %v; want DISCONNECT", err)
	}
	ts.dp.session(c2.Addr).Deliver(ipv4Packet(netip.MustParseAddr("10.77.0.1"), c2.Addr, "x"))
	readPacket(t, c2)
	// The replaced client says goodbye (a logout) on its old tunnel as it leaves, possibly after the takeover:
	// that must not end the session its successor uses.
	sess := ts.srv.Sessions().All()[0]
	sess.detach(&tunnel{}, true)
	if ts.srv.Sessions().Len() != 1 || !sess.Connected() {
		t.Fatal("a logout from a replaced tunnel ended the session")
	}
}

// TestSealedCookieWithoutSharedState: cookie_key_file alone seals the cookie (the login's facts inside), and the
// server uses it as any cookie; a logout still ends it.
func TestSealedCookieWithoutSharedState(t *testing.T) {
	keys, err := auth.ParseCookieKeys([]byte(base64.StdEncoding.EncodeToString(make([]byte, auth.CookieKeySize))), "keys")
	if err != nil {
		t.Fatal(err)
	}
	ts := startTestServerOpts(t, nil, func(o *Options) { o.Sealer = auth.LocalSealer{Keys: keys} })
	c := ts.mustDial(t, client.Options{})
	tok, err := keys.Open(c.Cookie, time.Now())
	if err != nil || tok.User != "alice" || tok.SessionID == ([16]byte{}) || tok.AuthAddr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("the cookie opened as %+v, %v", tok, err)
	}
	c2 := ts.mustDial(t, client.Options{Cookie: c.Cookie})
	if c2.Addr != c.Addr {
		t.Fatalf("reconnect with the sealed cookie: address %s then %s", c.Addr, c2.Addr)
	}
	c2.Close()
	waitFor(t, 5*time.Second, func() bool { return ts.srv.Sessions().Len() == 0 }, "session to end after logout")
	if _, err := ts.dial(t, client.Options{Cookie: c.Cookie}); statusCode(err) != 401 {
		t.Fatalf("sealed cookie after logout: %v, want a 401", err)
	}
}

func TestLogoutInvalidatesCookie(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.mustDial(t, client.Options{})
	c.Close() // DISCONNECT with the logout reason
	waitFor(t, 5*time.Second, func() bool { return ts.srv.Sessions().Len() == 0 }, "session to end after logout")
	if _, err := ts.dial(t, client.Options{Cookie: c.Cookie}); statusCode(err) != 401 {
		t.Fatalf("cookie after logout: %v, want a 401", err)
	}
}

func TestDroppedConnectionKeepsCookie(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.mustDial(t, client.Options{})
	c.Drop()
	c2 := ts.mustDial(t, client.Options{Cookie: c.Cookie})
	if c2.Addr != c.Addr {
		t.Fatalf("reconnect: address %s, want %s", c2.Addr, c.Addr)
	}
}

func TestBadFrameEndsOnlyThatTunnel(t *testing.T) {
	ts := startTestServer(t, nil)
	dpd := make(chan string, 1)
	good := ts.mustDial(t, client.Options{OnControl: func(typ byte, p []byte) {
		if typ == cstp.DPDResp {
			dpd <- string(p)
		}
	}})
	bad := ts.mustDial(t, client.Options{})
	bad.Conn().Write([]byte("STF\x02garbage-garbage"))
	if err := waitDone(t, bad); err == nil {
		t.Fatal("bad tunnel still open")
	}
	good.Conn().Write(cstp.AppendFrame(nil, cstp.DPDReq, []byte("alive?")))
	select {
	case p := <-dpd:
		if p != "alive?" {
			t.Fatalf("good tunnel after a bad one: DPD response %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("good tunnel after a bad one: no DPD response")
	}
	if ts.dp.session(good.Addr) == nil {
		t.Fatal("good session gone")
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "protocol error") }, "the protocol error in the log")
}

// muteConn is a TCP connection whose writes vanish once muted: a peer that went dead without a word.
type muteConn struct {
	net.Conn
	mute atomic.Bool
}

func (c *muteConn) Write(p []byte) (int, error) {
	if c.mute.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func TestDeadPeerIsDropped(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.DPD = time.Second })
	var mc *muteConn
	dpdReq := make(chan struct{}, 1)
	c := ts.mustDial(t, client.Options{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			mc = &muteConn{Conn: conn}
			return mc, err
		},
		OnControl: func(typ byte, _ []byte) {
			if typ == cstp.DPDReq {
				select {
				case dpdReq <- struct{}{}:
				default:
				}
			}
		},
	})
	// Say nothing (the client's DPD answers vanish): the server sends a DPD request after 2×DPD and drops the
	// tunnel after 3×DPD.
	mc.mute.Store(true)
	select {
	case <-dpdReq:
	case <-time.After(10 * time.Second):
		t.Fatal("no DPD request from the server")
	}
	if err := waitDone(t, c); err == nil {
		t.Fatal("tunnel still open after 3×DPD of silence")
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "DPD timeout") }, "DPD timeout in the log")
	if ts.srv.Sessions().Len() != 1 {
		t.Fatal("the session (cookie) must survive a DPD timeout")
	}
}

// A panic in a tunnel's reader ends that session, logged with its stack; the server and other sessions go on.
func TestTunnelPanicEndsOnlyItsSession(t *testing.T) {
	ts := startTestServer(t, nil)
	good, bad := ts.mustDial(t, client.Options{}), ts.mustDial(t, client.Options{})
	ts.dp.panicOn.Store(&bad.Addr)
	if err := bad.WritePacket(ipv4Packet(bad.Addr, netip.MustParseAddr("10.77.0.1"), "boom")); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, bad); err == nil {
		t.Fatal("the tunnel survived its panic")
	}
	waitFor(t, 5*time.Second, func() bool { return ts.srv.Sessions().Len() == 1 }, "the session to end")
	if l := ts.log.String(); !strings.Contains(l, "panic in a tunnel") || !strings.Contains(l, "goroutine") {
		t.Fatalf("no panic with a stack in the log:\n%s", l)
	}
	if _, err := good.Conn().Write(cstp.AppendFrame(nil, cstp.DPDReq, nil)); err != nil {
		t.Fatal(err)
	}
	ts.dp.session(good.Addr).Deliver(ipv4Packet(netip.MustParseAddr("10.77.0.1"), good.Addr, "still here"))
	readPacket(t, good)
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

// A drain: StopAccepting refuses new connections while sessions go on; Shutdown then sends them TERMINATE.
func TestDrain(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.mustDial(t, client.Options{})
	ts.srv.StopAccepting()
	if conn, err := net.DialTimeout("tcp", ts.addr, 5*time.Second); err == nil {
		conn.Close()
		t.Fatal("a new connection was accepted while draining")
	}
	ts.dp.session(c.Addr).Deliver(ipv4Packet(netip.MustParseAddr("10.77.0.1"), c.Addr, "draining"))
	readPacket(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var de *client.DisconnectError
	if err := waitDone(t, c); !errors.As(err, &de) || de.Type != cstp.Terminate {
		t.Fatalf("the tunnel ended with %v, want TERMINATE", err)
	}
}

// A per-user file's keys reach the CONNECT response: DNS (dns by family), NBNS, split DNS, the host name, the
// MTU and the timers.
func TestPerUserConnectHeaders(t *testing.T) {
	dir := t.TempDir()
	user := `ipv4_dns = ["10.9.0.53"]
nbns = ["10.9.0.137"]
split_dns = ["corp.example", "lab.example"]
tunnel_all_dns = true
hostname = "alice-pc"
mtu = 1400
dpd = 33
keepalive = 44
idle_timeout = 55
session_timeout = 3600
route = ["10.9.0.0/16"]
`
	if err := os.WriteFile(filepath.Join(dir, "alice"), []byte(user), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, func(c *config.Config) {
		c.ConfigPerUser = dir
		c.SplitDNS = []string{"global.example"}
	})
	c := ts.mustDial(t, client.Options{})
	for k, want := range map[string]string{
		"X-CSTP-DNS": "[10.9.0.53]", "X-CSTP-NBNS": "[10.9.0.137]", "X-CSTP-Split-DNS": "[corp.example lab.example]",
		"X-CSTP-Tunnel-All-DNS": "[true]", "X-CSTP-Hostname": "[alice-pc]", "X-CSTP-Base-MTU": "[1400]",
		"X-CSTP-MTU": "[1372]", "X-CSTP-DPD": "[33]", "X-CSTP-Keepalive": "[44]", "X-CSTP-Idle-Timeout": "[55]",
		"X-CSTP-Session-Timeout": "[3600]", "X-CSTP-Split-Include": "[10.9.0.0/255.255.0.0]",
	} {
		if got := fmt.Sprint(c.Header[k]); got != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
}
