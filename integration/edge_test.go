package integration

// The edge end to end (protocol/edge.go): the stock client through HAProxy (lb_harness_test.go), in front of
// instances that take the client's address from a PROXY v2 header, or behind HAProxy terminating TLS.

import (
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEdgeProxyV2RealAddress: through HAProxy in TCP mode with send-proxy-v2, the instance holding the session logs
// the client's address (10.59.0.2), not HAProxy's (10.60.0.254), and so does `ctl show users`; traffic flows.
func TestEdgeProxyV2RealAddress(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	cl := c.lbClient()
	if out, code := cl.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("curl through the tunnel: exit %d\n%s", code, out)
	}
	in := c.holder(cl.ip)
	if in == nil {
		t.Fatalf("no instance logged the session of %s", cl.ip)
	}
	in.waitLog(`"auth success" user=`+vpnUser+` remote=`+regexp.QuoteMeta(lbClientAddr)+`:\d+`, 5*time.Second)
	if strings.Contains(in.log(), "remote="+lbSource) {
		t.Errorf("the instance logged HAProxy's address %s as a client's:\n%s", lbSource, in.log())
	}
	us := in.users(t)
	if len(us) != 1 || us[0].RemoteIP != lbClientAddr {
		t.Fatalf("ctl show users: want one user from %s, got %+v", lbClientAddr, us)
	}
}

// TestEdgeDTLSOwnedElsewhere: the balancer sends the client's UDP to another instance than its TLS connection (a
// source-IP hash that is not HAProxy's): the DTLS ClientHello names a session that instance does not know. It
// answers with a fatal alert, so the client gives DTLS up at once and comes up on CSTP with traffic flowing,
// instead of waiting ~12 s for a handshake that never answers (docs/protocol.md §7.6).
func TestEdgeDTLSOwnedElsewhere(t *testing.T) {
	c := newCluster(t, clusterOptions{DTLSElsewhere: true})
	start := time.Now()
	cl := c.lbClient()
	if out, code := cl.curl("--fail", "--max-time", "10", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("curl through the tunnel: exit %d\n%s", code, out)
	}
	t.Logf("configured and first request answered in %s", time.Since(start))
	if in := c.holder(cl.ip); in != c.instance(0) {
		t.Fatalf("the session is not on instance 0 (HAProxy's balance first)")
	}
	out := cl.proc.out.String()
	if !strings.Contains(out, "DTLS handshake failed: A TLS fatal alert has been received") || strings.Contains(out, "DTLS handshake timed out") {
		t.Fatalf("the client did not give DTLS up on the other instance's alert:\n%s", out)
	}
}

// TestEdgeUntrustedProxyHeader: a peer outside trusted_proxies (the client namespace, straight to an instance)
// that sends a PROXY header is closed with the reason logged; the same peer without a header is served as itself.
func TestEdgeUntrustedProxyHeader(t *testing.T) {
	c := newCluster(t, clusterOptions{Instances: 1, NoUDPLB: true})
	in := c.instance(0)
	conn, err := c.clientNS.dial(net.JoinHostPort(in.addr, "8443"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// PROXY v1 claiming another client: the header a forged balancer would send.
	io.WriteString(conn, "PROXY TCP4 198.51.100.66 10.60.1.1 5555 8443\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the instance answered %d bytes to an untrusted PROXY header", n)
	}
	in.waitLog(`remote=`+regexp.QuoteMeta(lbClientAddr)+`:\d+ reason="PROXY protocol header from a peer not in trusted_proxies"`, 5*time.Second)
	if strings.Contains(in.log(), "198.51.100.66") {
		t.Fatalf("the forged address reached the log:\n%s", in.log())
	}
	// Without a header, the same peer is a direct client.
	direct := &server{t: t, ns: c.clientNS, pin: c.pin, host: in.addr, port: 8443}
	cl := connect(t, direct, vpnUser, vpnPass)
	if out, code := cl.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("curl through the direct tunnel: exit %d\n%s", code, out)
	}
	if us := in.users(t); len(us) != 1 || us[0].RemoteIP != lbClientAddr {
		t.Fatalf("ctl show users: want one user from %s, got %+v", lbClientAddr, us)
	}
}

// TestEdgeTLSTerminatedInFront: HAProxy terminates TLS (with the instances' certificate) and passes the plain
// HTTP with a PROXY v2 header to listen_clear_file: the stock client's session runs end to end over TLS only (no
// DTLS offered), requests and answers cross it, and the instance knows the client's address. Light traffic only:
// the proxy re-records the stream, and frames it reads together share a TLS record, which openconnect 9.01 drops
// (docs/protocol.md §6.2; README, "TLS terminated in front").
func TestEdgeTLSTerminatedInFront(t *testing.T) {
	c := newCluster(t, clusterOptions{Mode: lbTLSFront})
	cl := c.lbClient()
	for i := range 5 {
		out, code := cl.curl("--fail", "http://target.test:8080/hello")
		if code != 0 || !strings.Contains(out, "hello from") {
			t.Fatalf("request %d through the tunnel: exit %d, %q", i, code, out)
		}
	}
	const size = 1000
	out, code := cl.curl("--fail", "-o", "/dev/null", "-w", "%{size_download}", fmt.Sprintf("http://target.test:8080/bytes?n=%d", size))
	if code != 0 || strings.TrimSpace(out) != strconv.Itoa(size) {
		t.Fatalf("download through the tunnel: exit %d, %q", code, out)
	}
	in := c.holder(cl.ip)
	if in == nil {
		t.Fatalf("no instance logged the session of %s", cl.ip)
	}
	in.waitLog(`"session connected".* remote=`+regexp.QuoteMeta(lbClientAddr)+`:\d+`, 5*time.Second)
	if o := cl.proc.out.String(); strings.Contains(o, "X-DTLS-") || strings.Contains(o, "DTLS initialised") {
		t.Fatalf("DTLS was offered through the TLS-terminating proxy:\n%s", o)
	}
	us := in.users(t)
	if len(us) != 1 || us[0].RemoteIP != lbClientAddr || us[0].Channel != "tls" {
		t.Fatalf("ctl show users: want one user from %s on tls, got %+v", lbClientAddr, us)
	}
}

// TestEdgeForwardedFor: on listen_clear without PROXY protocol, X-Forwarded-For names the client only when a
// trusted proxy sends it (loopback by default); from any other peer it is ignored and the peer is the client.
func TestEdgeForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"from a trusted proxy it names the client", "", "remote=203.0.113.9:0"},
		{"from an untrusted peer it is ignored", "trusted_proxies = [\"10.9.9.9/32\"]\n", "remote=127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			s := startServer(t, ns, newServerDir(t), "listen_clear = \"127.0.0.1:8080\"\n"+tc.config)
			out, code := ns.output(10*time.Second, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
				"-H", "X-Forwarded-For: 198.51.100.1, 203.0.113.9", "http://127.0.0.1:8080/no-such-page")
			if code != 0 || out != "404" {
				t.Fatalf("curl: exit %d, %q", code, out)
			}
			waitFor(t, 5*time.Second, "the log to name "+tc.want, func() bool {
				return strings.Contains(s.stderr.String(), "unknown path") && strings.Contains(s.stderr.String(), tc.want)
			})
		})
	}
}

// TestEdgeBalancerCost measures (report only, one run each) a download and small-request latency through HAProxy
// with send-proxy-v2 against the same instance reached directly, both over TLS only (no DTLS), so that the
// difference is the balancer's relay.
func TestEdgeBalancerCost(t *testing.T) {
	c := newCluster(t, clusterOptions{Instances: 1, NoUDPLB: true})
	in := c.instance(0)
	direct := &server{t: t, ns: c.clientNS, pin: c.pin, host: in.addr, port: 8443}
	const size = 64 << 20
	measure := func(name string, s *server) (mbps, ms float64) {
		cl := connect(t, s, vpnUser, vpnPass, "--no-dtls")
		out, code := cl.curl("--fail", "-o", "/dev/null", "-w", "%{time_total}", fmt.Sprintf("http://10.77.0.1:8080/bytes?n=%d", size))
		secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if code != 0 || err != nil {
			t.Fatalf("%s: download: exit %d, %q", name, code, out)
		}
		var lat []float64
		for range 20 {
			out, code := cl.curl("--fail", "-o", "/dev/null", "-w", "%{time_total}", "http://10.77.0.1:8080/hello")
			v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if code != 0 || err != nil {
				t.Fatalf("%s: request: exit %d, %q", name, code, out)
			}
			lat = append(lat, v*1000)
		}
		slices.Sort(lat)
		cl.proc.stop(5 * time.Second)
		return float64(size) * 8 / secs / 1e6, lat[len(lat)/2]
	}
	dMbps, dMs := measure("direct", direct)
	lMbps, lMs := measure("through HAProxy", c.front())
	t.Logf("download %d MiB: direct %.0f Mbit/s, through HAProxy send-proxy-v2 %.0f Mbit/s (ratio %.2f); "+
		"median request: direct %.2f ms, through HAProxy %.2f ms (ratio %.2f)",
		size>>20, dMbps, lMbps, lMbps/dMbps, dMs, lMs, lMs/dMs)
}

// TestLBHarness exercises the harness the scale-out tests build on: Redis stops and starts, HAProxy notices a
// killed instance and sends new clients to the other one, and a restarted instance comes back with its log
// kept across runs.
func TestLBHarness(t *testing.T) {
	c := newCluster(t, clusterOptions{Redis: true, Balance: "first"})
	if out, code := c.redisCLI("PING"); code != 0 || strings.TrimSpace(out) != "PONG" {
		t.Fatalf("redis-cli PING: exit %d, %q", code, out)
	}
	c.stopRedis()
	if _, code := c.redisCLI("PING"); code == 0 {
		t.Fatal("Redis still answers after stopRedis")
	}
	c.startRedis()
	if out, code := c.redisCLI("PING"); code != 0 || strings.TrimSpace(out) != "PONG" {
		t.Fatalf("redis-cli PING after startRedis: exit %d, %q", code, out)
	}

	a, b := c.instance(0), c.instance(1)
	cl := c.lbClient()
	if c.holder(cl.ip) != a {
		t.Fatalf("HAProxy's balance first did not choose instance 0")
	}
	a.kill()
	c.waitBackend(0, false)
	cl2 := c.lbClient()
	if c.holder(cl2.ip) != b {
		t.Fatalf("a new client did not reach instance 1 while instance 0 is down")
	}
	a.restart()
	c.waitBackend(0, true)
	a.waitLog(`"session connected"`, time.Second) // from the first run, kept by log()
	if strings.Contains(a.stderr.String(), "session connected") {
		t.Fatal("the restarted instance's current log holds the first run's session")
	}
	if code := b.stopInst(); code != 0 {
		t.Fatalf("instance 1 exited %d on SIGTERM", code)
	}
}
