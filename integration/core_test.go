package integration

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoginAndTransfer: the stock client logs in with the right password, then 64 MiB come down and 16 MiB go up
// through the tunnel with equal SHA-256 at both ends.
func TestLoginAndTransfer(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]`)
	c := connect(t, s, vpnUser, vpnPass)
	if !strings.HasPrefix(c.ip, "10.250.77.") {
		t.Fatalf("assigned %s, want an address of the default pool 10.250.77.0/24", c.ip)
	}

	download(t, c, 64<<20, 7)
	upload(t, c, 16<<20, 99)
	if !strings.Contains(s.stderr.String(), `msg="auth success" user=alice remote=127.0.0.1:`) {
		t.Errorf("no auth success line in the server log")
	}
}

// TestDNSThroughTunnel: with no dns configured, the client is told to use the server's in-pool address; ocproxy
// resolves target.test there (a UDP request/response through the tunnel), the server answers from its host's
// resolver (/etc/hosts of the namespace), and the name then works.
func TestDNSThroughTunnel(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), ``)
	c := connect(t, s, vpnUser, vpnPass)
	out, code := c.curl("--fail", "http://target.test:8080/hello")
	if code != 0 || strings.TrimSpace(out) != "hello from 10.77.0.1:8080" {
		t.Fatalf("curl http://target.test:8080/hello through the tunnel: exit %d, %q", code, out)
	}
	out, code = c.curl("http://no-such-name.test:8080/")
	if code != 97 && code != 6 {
		t.Fatalf("an unknown name: exit %d (%q), want a resolution failure", code, out)
	}
}

// TestWrongPasswordAndLocked: both fail the way ocserv's do for a scripted client, the server logs who and from
// where, and keeps serving.
func TestWrongPasswordAndLocked(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), ``)
	for _, tc := range []struct{ user, pass, reason string }{
		{vpnUser, "wrong password", "wrong password or unknown user"},
		{"locked", vpnPass, "account locked"},
		{"nobody-here", vpnPass, "wrong password or unknown user"},
	} {
		c := launch(t, ns, s.pin, tc.user, tc.pass, s.url())
		select {
		case <-c.proc.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: openconnect did not give up", tc.user)
		}
		out := c.proc.out.String()
		if code := c.proc.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out, "Failed to complete authentication") ||
			!strings.Contains(out, "Login failed.") {
			t.Fatalf("%s: exit %d, output:\n%s", tc.user, code, out)
		}
		want := fmt.Sprintf(`msg="auth failure" user=%s remote=127.0.0.1:`, tc.user)
		waitFor(t, 5*time.Second, "the auth failure log line", func() bool {
			return strings.Contains(s.stderr.String(), want) && strings.Contains(s.stderr.String(), tc.reason)
		})
	}
	c := connect(t, s, vpnUser, vpnPass)
	if out, code := c.curl("--fail", "http://10.77.0.1:8080/hello"); code != 0 {
		t.Fatalf("after failed logins, a good one: exit %d %q", code, out)
	}
}

// TestEgressPolicy: inside the routes works; outside them, in egress_deny, and the server's own loopback are
// refused (the trap on 127.0.0.1:8081 sees no connection) until egress_allow names the loopback address.
func TestEgressPolicy(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	dir := newServerDir(t)
	s := startServer(t, ns, dir, "route = [\"10.77.0.0/24\"]\negress_deny = [\"10.77.0.2/32\"]")
	c := connect(t, s, vpnUser, vpnPass)
	if out, code := c.curl("--fail", "http://10.77.0.1:8080/hello"); code != 0 {
		t.Fatalf("inside the routes: exit %d %q", code, out)
	}
	// Refused: the server resets the connection, which ocproxy reports as SOCKS error 5 (connection refused).
	for _, dst := range []string{"10.88.0.1:8080", "10.77.0.2:8080", "127.0.0.1:8081"} {
		start := time.Now()
		out, code := c.curl("http://" + dst + "/hello")
		if code != 97 || !strings.Contains(out, "(5)") {
			t.Errorf("%s: exit %d %q, want curl's SOCKS connection-refused error (97, reply 5)", dst, code, out)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: refusal took %s; a reset is immediate", dst, d)
		}
	}
	conn, err := ns.dial("127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /stats HTTP/1.0\r\n\r\n")
	body, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.HasSuffix(strings.TrimSpace(string(body)), "\n0") {
		t.Fatalf("the loopback trap was reached: %q", body)
	}
	c.proc.stop(10 * time.Second)
	s.stop()

	s = startServer(t, ns, dir, "route = [\"10.77.0.0/24\", \"127.0.0.1/32\"]\negress_allow = [\"127.0.0.1/32\"]")
	c = connect(t, s, vpnUser, vpnPass)
	if out, code := c.curl("--fail", "http://127.0.0.1:8081/hello"); code != 0 || !strings.Contains(out, "hello from 127.0.0.1:8081") {
		t.Fatalf("loopback with egress_allow: exit %d %q", code, out)
	}
}

// startFreshHomeServer starts the server on its embedded defaults, as an unprivileged user with a fresh HOME and
// no XDG_STATE_HOME, so that the state goes to ~/.local/state/ocgate (setpriv keeps the environment), in a namespace
// with the target and a LAN host behind it.
func startFreshHomeServer(t *testing.T) (*netns, netip.AddrPort, *server) {
	ns := newNetns(t)
	ns.startTarget()
	lan := newLAN(t, ns)
	home := tempDir(t)
	chownAll(t, home)
	s := &server{t: t, ns: ns, port: 8443, stateDir: filepath.Join(home, ".local", "state", "ocgate")}
	s.env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	s.start()
	return ns, lan, s
}

// TestReadmeDefaultCommand: the embedded defaults, run as a non-root user with a fresh home, print a command line
// and a password that work; a restart reuses them.
func TestReadmeDefaultCommand(t *testing.T) {
	t.Parallel()
	ns, lan, s := startFreshHomeServer(t)
	printed := s.stdout.String()
	cmdRE := regexp.MustCompile(`(?m)^  (openconnect --servercert (pin-sha256:\S+) -u (\S+) (https://\S+))$`)
	m := cmdRE.FindStringSubmatch(printed)
	pw := regexp.MustCompile(`(?m)^Password: (\S+)$`).FindStringSubmatch(printed)
	if m == nil || pw == nil {
		t.Fatalf("no command line or password in:\n%s", printed)
	}
	if fi, err := os.Stat(filepath.Join(s.stateDir, "server-cert.pem")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != unprivUID {
		t.Fatalf("state directory not created by the unprivileged user: %v", err)
	}
	// launch runs exactly the printed command, plus the password on stdin and ocproxy as the tunnel.
	c := launch(t, ns, m[2], m[3], pw[1], m[4])
	waitFor(t, 30*time.Second, "the printed command to connect", func() bool {
		return configuredRE.MatchString(c.proc.out.String()) || c.proc.exited()
	})
	if c.proc.exited() {
		t.Fatalf("the printed command failed:\n%s", c.proc.out.String())
	}
	waitFor(t, 10*time.Second, "ocproxy's SOCKS port", func() bool {
		conn, err := ns.dial(fmt.Sprintf("127.0.0.1:%d", c.socksPort))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	// The defaults reach the network behind the server, not the server's host (target.test is on its lo).
	if out, code := c.curl("--fail", "http://"+lan.String()+"/hello"); code != 0 || !strings.Contains(out, "hello from "+lan.String()) {
		t.Fatalf("through the default server: exit %d %q", code, out)
	}
	if out, code := c.curl("--fail", "http://target.test:8080/hello"); code == 0 {
		t.Fatalf("the server's host through the default server: %q, want a refusal", out)
	}
	c.proc.stop(10 * time.Second)
	if code := s.stop(); code != 0 {
		t.Fatalf("SIGTERM: exit status %d, want 0", code)
	}
	s.start()
	if again := s.stdout.String(); !strings.Contains(again, m[1]) || !strings.Contains(again, "Password: "+pw[1]) {
		t.Fatalf("restart printed something else:\n%s\nfirst time:\n%s", again, printed)
	}
}

// TestBadInput: garbage, non-TLS, oversized and malformed requests, missing and forged cookies, and broken CSTP
// frames each end only their own connection; a real client's session keeps working throughout.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `max_same_clients = 0`)
	c := connect(t, s, vpnUser, vpnPass)
	addr := fmt.Sprintf("127.0.0.1:%d", s.port)

	raw := func(payload string) string {
		conn, err := ns.dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte(payload))
		b, _ := io.ReadAll(conn)
		return string(b)
	}
	raw("\x00\x01garbage garbage garbage\r\n\r\n")
	if out := raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("plain HTTP got a 200: %q", out)
	}

	tlsDo := func(req string) string {
		conn, err := ns.dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return "handshake: " + err.Error()
		}
		go tc.Write([]byte(req)) // the server may answer before it has read all of it
		line, _ := bufio.NewReader(tc).ReadString('\n')
		return strings.TrimSpace(line)
	}
	for _, tc := range []struct{ name, req, want string }{
		{"oversized header", "POST / HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"malformed XML", "POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n<config-auth><a></b>", "HTTP/1.1 400 "},
		{"oversized body", "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", "HTTP/1.1 413 "},
		{"CONNECT without cookie", "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\n\r\n", "HTTP/1.1 503 "},
		{"CONNECT with a forged cookie", "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nCookie: webvpn=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n", "HTTP/1.1 401 Cookie is not acceptable"},
		{"unknown path", "GET /etc/passwd HTTP/1.1\r\n\r\n", "HTTP/1.1 404 "},
	} {
		if got := tlsDo(tc.req); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}

	// Broken CSTP frames on a properly authenticated tunnel of our own.
	for _, frame := range []string{"STF\x02\x00\x00\x00\x00", "STF\x01\xff\xff\x00\x00", "STF\x01\x00\x40\x00\x00short"} {
		conn, err := ns.dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		cookie := goLogin(t, tc)
		fmt.Fprintf(tc, "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nCookie: webvpn=%s\r\n\r\n", cookie)
		br := bufio.NewReader(tc)
		if status, _ := br.ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200 CONNECTED") {
			t.Fatalf("CONNECT: %q", status)
		}
		tc.Write([]byte(frame))
		if frame == "STF\x01\x00\x40\x00\x00short" {
			tc.CloseWrite()
		}
		io.Copy(io.Discard, br) // the server ends this tunnel
		tc.Close()
	}
	waitFor(t, 5*time.Second, "protocol errors in the log", func() bool {
		return strings.Count(s.stderr.String(), "protocol error") >= 3
	})
	if s.proc.exited() {
		t.Fatal("the server died")
	}
	download(t, c, 1<<20, 3) // the real client's session still works
}

// goLogin does the XML authentication exchange over tc and returns the cookie.
func goLogin(t *testing.T, tc *tls.Conn) string {
	t.Helper()
	br := bufio.NewReader(tc)
	post := func(path, body string) string {
		fmt.Fprintf(tc, "POST %s HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		var resp strings.Builder
		n := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading response: %v", err)
			}
			resp.WriteString(line)
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				fmt.Sscan(v, &n)
			}
			if line == "\r\n" {
				break
			}
		}
		b := make([]byte, n)
		io.ReadFull(br, b)
		return resp.String() + string(b)
	}
	post("/", `<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="init"><version who="vpn">v9.01</version></config-auth>`)
	resp := post("/auth", fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="auth-reply"><auth><username>%s</username><password>%s</password></auth></config-auth>`, vpnUser, vpnPass))
	m := regexp.MustCompile(`Set-Cookie: webvpn=([^;\r\n]+)`).FindStringSubmatch(resp)
	if m == nil {
		t.Fatalf("no cookie in %q", resp)
	}
	return m[1]
}
