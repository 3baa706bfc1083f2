package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startTargetOn runs testtarget on the given addresses only.
func (ns *netns) startTargetOn(addrs ...string) {
	ns.t.Helper()
	p := ns.start(nil, targetBin, "-listen", strings.Join(addrs, ","))
	waitFor(ns.t, 10*time.Second, "testtarget to listen", func() bool {
		return strings.Contains(p.out.String(), "ready") || p.exited()
	})
	if p.exited() {
		ns.t.Fatalf("testtarget exited: %s", p.out.String())
	}
}

// acceptCounter reads how many TCP connections a testtarget listener accepted from the tunnel: its /stats, asked
// from inside the namespace (not through the tunnel), minus the earlier /stats requests.
type acceptCounter struct {
	ns     *netns
	addr   string
	probes int
}

func (a *acceptCounter) get(t *testing.T) int {
	t.Helper()
	conn, err := a.ns.dial(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /stats HTTP/1.0\r\n\r\n")
	body, _ := io.ReadAll(conn)
	lines := readLines(strings.TrimSpace(string(body)))
	n, err := strconv.Atoi(lines[len(lines)-1])
	if err != nil {
		t.Fatalf("%s/stats: %q", a.addr, body)
	}
	n -= a.probes // /stats counts the connections before its own, our earlier ones included
	a.probes++
	return n
}

// wantRefused checks that curl through c to url is refused at once: the server resets the flow, which ocproxy
// reports as SOCKS error 5 (connection refused, curl's exit 97).
func wantRefused(t *testing.T, c *client, url string) {
	t.Helper()
	start := time.Now()
	out, code := c.curl(url)
	if code != 97 || !strings.Contains(out, "(5)") {
		t.Errorf("%s: exit %d %q, want curl's SOCKS connection-refused error (97, reply 5)", url, code, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("%s: refusal took %s; a reset is immediate", url, d)
	}
}

func wantHello(t *testing.T, c *client, addr string) {
	t.Helper()
	out, code := c.curl("--fail", "http://"+addr+"/hello")
	if code != 0 || strings.TrimSpace(out) != "hello from "+addr {
		t.Fatalf("http://%s/hello: exit %d %q", addr, code, out)
	}
}

// TestPorts: restrict_user_to_ports = "tcp(8080)" lets the user reach port 8080 and refuses 9090 of the same
// host (which sees no connection); a per-user "!(tcp(8080))" replaces the global list and refuses 8080 only.
// Names still resolve through the tunnel: DNS at the server's in-pool address is exempt.
func TestPorts(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTargetOn("10.77.0.1:8080", "10.77.0.1:9090")
	dir := newServerDir(t)
	s := startServer(t, ns, dir, `restrict_user_to_ports = "tcp(8080)"`)
	c := connect(t, s, vpnUser, vpnPass)
	wantHello(t, c, "10.77.0.1:8080")
	wantRefused(t, c, "http://10.77.0.1:9090/hello")
	if n := (&acceptCounter{ns: ns, addr: "10.77.0.1:9090"}).get(t); n != 0 {
		t.Fatalf("port 9090 accepted %d connections through the tunnel, want 0", n)
	}
	if out, code := c.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("by name (DNS through the tunnel): exit %d %q", code, out)
	}
	c.proc.stop(10 * time.Second)
	s.stop()

	users := filepath.Join(dir, "users")
	if err := os.MkdirAll(users, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(users, vpnUser), []byte(`restrict_user_to_ports = "!(tcp(8080))"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, ns, dir, "restrict_user_to_ports = \"tcp(8080)\"\nconfig_per_user = \"users\"")
	c = connect(t, s, vpnUser, vpnPass)
	wantRefused(t, c, "http://10.77.0.1:8080/hello")
	wantHello(t, c, "10.77.0.1:9090")
}

// TestFlowCap: with max_flows_per_session = 4, a client holding four slow downloads gets a refusal for a fifth
// connection while a second session (max_same_clients defaults to 2) fetches normally; once the downloads end the
// first client connects again.
func TestFlowCap(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "max_flows_per_session = 4")
	a := connect(t, s, vpnUser, vpnPass)
	b := connect(t, s, vpnUser, vpnPass)
	if a.ip == b.ip {
		t.Fatalf("both sessions have %s", a.ip)
	}
	// Four downloads paced at 20 kB/s: they stay open for the whole test. Addresses are literal, so no DNS flow
	// counts against the cap.
	var downloads []*proc
	for i := range 4 {
		downloads = append(downloads, ns.start(nil, "curl", "-sS", "-o", "/dev/null", "--socks5-hostname",
			fmt.Sprintf("127.0.0.1:%d", a.socksPort), fmt.Sprintf("http://10.77.0.1:8080/bytes?n=100000000&seed=%d&rate=20000", i)))
	}
	target := &acceptCounter{ns: ns, addr: "10.77.0.1:8080"}
	waitFor(t, 30*time.Second, "the target to accept the four downloads", func() bool {
		for _, d := range downloads {
			if d.exited() {
				t.Fatalf("a download ended early: %v\n%s", d.err, d.out.String())
			}
		}
		return target.get(t) >= 4
	})
	wantRefused(t, a, "http://10.77.0.1:8080/hello")
	if n := target.get(t); n != 4 {
		t.Fatalf("the target accepted %d connections, want the 4 downloads (the fifth never dialled)", n)
	}
	wantHello(t, b, "10.77.0.1:8080")
	for _, d := range downloads {
		if d.exited() {
			t.Fatalf("a download ended while the cap was tested: %v\n%s", d.err, d.out.String())
		}
	}
	for _, d := range downloads {
		d.stop(5 * time.Second)
	}
	waitFor(t, 30*time.Second, "client A to connect again once its downloads ended", func() bool {
		_, code := a.curl("--fail", "http://10.77.0.1:8080/hello")
		return code == 0
	})
}
