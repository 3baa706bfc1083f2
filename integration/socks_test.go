package integration

// SOCKS5 ingress (socks5_listen, netstack datapath): a host application in the server's namespace opens TCP
// connections through the server's SOCKS port to a service listening on a VPN client's address. The client has a
// real TUN in its own namespace (ocproxy accepts no inbound connections) and routes the pool into the tunnel, so
// its replies to the server's in-pool address, where ingress connections come from, go back through it.

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

const socksPort = "1080"

// serveOnClient runs testtarget on the client's tunnel address, port 8080.
func serveOnClient(t *testing.T, c *tunClient) {
	t.Helper()
	p := c.ns.start(nil, targetBin, "-listen", c.ip+":8080")
	waitFor(t, 10*time.Second, "a service on "+c.ip, func() bool {
		return strings.Contains(p.out.String(), "ready") || p.exited()
	})
	if p.exited() {
		t.Fatalf("testtarget on the client exited: %s", p.out.String())
	}
}

// socksCurl fetches url from the server's namespace through the SOCKS port; proxy is curl's -x value.
func socksCurl(r *tunRig, proxy, url string) (string, int) {
	return r.ns.output(30*time.Second, "curl", "-sS", "--max-time", "15", "-x", proxy, url)
}

func newSOCKSRig(t *testing.T, extra string) *tunRig {
	t.Helper()
	r := newRig(t, false, "route = [\"10.77.0.0/24\", \"10.250.77.0/24\"]\nsocks5_listen = \"127.0.0.1:"+socksPort+"\"\n"+extra)
	// The log is read from the server's stderr by another goroutine: wait for the line rather than look once.
	re := regexp.MustCompile(`msg="socks5 ingress listening" addr=127\.0\.0\.1:` + socksPort)
	waitFor(t, 10*time.Second, "the server's log line that it serves SOCKS5", func() bool { return re.MatchString(r.s.stderr.String()) })
	return r
}

// TestSOCKSIngress: a host application reaches a service on a VPN client's address through the SOCKS port, and
// nothing else: not a host service (10.77.0.1:8080, served in the server's namespace), not the host's loopback,
// not the gateway, not a pool address no session holds, not a name; once the client has gone, its address is
// refused too.
func TestSOCKSIngress(t *testing.T) {
	t.Parallel()
	r := newSOCKSRig(t, "")
	c := r.connect(vpnUser)
	serveOnClient(t, c)
	proxy := "socks5://127.0.0.1:" + socksPort

	out, code := socksCurl(r, proxy, "http://"+c.ip+":8080/hello")
	if code != 0 || !strings.Contains(out, "hello from "+c.ip) {
		t.Fatalf("through SOCKS to the client: exit %d: %s", code, out)
	}
	if !strings.Contains(r.s.stderr.String(), `msg="SOCKS5 connection"`) {
		t.Errorf("the server did not log the SOCKS5 connection")
	}

	// The host service is up (reached directly), but not through SOCKS.
	if out, code := r.ns.output(30*time.Second, "curl", "-sS", "--max-time", "15", "http://10.77.0.1:8080/hello"); code != 0 || !strings.Contains(out, "hello from 10.77.0.1") {
		t.Fatalf("the host service is not up: exit %d: %s", code, out)
	}
	for _, tc := range []struct{ proxy, url string }{
		{proxy, "http://10.77.0.1:8080/hello"},                                // a host service
		{proxy, "http://127.0.0.1:8081/hello"},                                // the server's loopback
		{proxy, "http://10.250.77.1:53/"},                                     // the gateway
		{proxy, "http://10.250.77.200:8080/hello"},                            // in the pool, no session
		{"socks5h://127.0.0.1:" + socksPort, "http://target.test:8080/hello"}, // a name
	} {
		out, code := socksCurl(r, tc.proxy, tc.url)
		if code == 0 || strings.Contains(out, "hello from") {
			t.Errorf("%s through %s: exit %d, want a refusal: %s", tc.url, tc.proxy, code, out)
		}
	}
	for _, dst := range []string{"10.77.0.1:8080", "127.0.0.1:8081", "10.250.77.1:53", "10.250.77.200:8080"} {
		re := regexp.MustCompile(`msg="SOCKS5 request refused" .*dst=` + regexp.QuoteMeta(dst))
		waitFor(t, 10*time.Second, "the server log to show "+dst+" refused", func() bool { return re.MatchString(r.s.stderr.String()) })
	}

	// A closed port on the client: refused by the client itself (a reset), reported as such.
	if out, code := socksCurl(r, proxy, "http://"+c.ip+":8081/"); code == 0 {
		t.Errorf("a closed port on the client: exit 0: %s", out)
	}

	c.proc.stop(10 * time.Second) // logout: the address is no longer a client's
	waitFor(t, 10*time.Second, "the session to end", func() bool {
		return strings.Contains(r.s.stderr.String(), `msg="session ended"`)
	})
	if out, code := socksCurl(r, proxy, "http://"+c.ip+":8080/hello"); code == 0 {
		t.Fatalf("through SOCKS to a client that has gone: exit 0: %s", out)
	}
	re := regexp.MustCompile(`msg="SOCKS5 request refused" .*dst=` + regexp.QuoteMeta(c.ip+":8080"))
	waitFor(t, 10*time.Second, "the server log to show the departed client's address refused", func() bool { return re.MatchString(r.s.stderr.String()) })
}

// TestSOCKSIngressAuth: with socks5_user and socks5_password set, a request without credentials or with wrong
// ones fails and one with them works.
func TestSOCKSIngressAuth(t *testing.T) {
	t.Parallel()
	r := newSOCKSRig(t, "socks5_user = \"app\"\nsocks5_password = \"s3cret-pass\"\n")
	if !strings.Contains(r.s.stderr.String(), "auth=true") {
		t.Errorf("the server does not say the SOCKS5 ingress requires a password:\n%s", r.s.stderr.String())
	}
	c := r.connect(vpnUser)
	serveOnClient(t, c)
	url := "http://" + c.ip + ":8080/hello"
	for _, proxy := range []string{
		"socks5://127.0.0.1:" + socksPort,
		"socks5://app:wrong@127.0.0.1:" + socksPort,
		"socks5://bob:s3cret-pass@127.0.0.1:" + socksPort,
	} {
		if out, code := socksCurl(r, proxy, url); code == 0 || strings.Contains(out, "hello from") {
			t.Errorf("%s: exit %d, want an authentication failure: %s", proxy, code, out)
		}
	}
	out, code := socksCurl(r, "socks5://app:s3cret-pass@127.0.0.1:"+socksPort, url)
	if code != 0 || !strings.Contains(out, "hello from "+c.ip) {
		t.Fatalf("with the credentials: exit %d: %s", code, out)
	}
}
