package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIPv6InsideTheTunnel: with ipv6_network, the stock client on a real TUN gets an IPv6 address from the
// pool; TCP both ways to an IPv6 target (fd99::1 on the server namespace's loopback) crosses the netstack, whose
// host side dials over IPv6; the scripts see IPV6_REMOTE; an IPv6 destination outside the routes is refused.
func TestIPv6InsideTheTunnel(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.must("ip", "-n", ns.name, "addr", "add", "fd99::1/128", "dev", "lo")
	ns.must("ip", "-n", ns.name, "addr", "add", "fd98::1/128", "dev", "lo")
	p := ns.start(nil, targetBin, "-listen", "[fd99::1]:8080,[fd98::1]:8080")
	waitFor(t, 10*time.Second, "the IPv6 target", func() bool { return strings.Contains(p.out.String(), "ready") || p.exited() })
	// dual.test has an IPv6 address the server's host cannot reach (no route to fd97::/64) and an IPv4 one.
	hosts := filepath.Join("/etc/netns", ns.name, "hosts")
	f0, err := os.OpenFile(hosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f0.WriteString("fd97::1 dual.test\n10.77.0.1 dual.test\n")
	f0.Close()
	r := newRigIn(t, ns, false, "ipv6_network = \"fd00:77::/64\"\nroute = [\"10.77.0.0/24\", \"fd99::/64\", \"fd97::/64\"]")
	c := r.connect(vpnUser)
	out := c.proc.out.String()
	if !strings.Contains(out, "X-CSTP-Address-IP6: fd00:77::") {
		t.Fatalf("no IPv6 address in the CONNECT response:\n%s", out)
	}
	env := r.scriptEnv("connect", vpnUser)
	ip6 := env["IPV6_REMOTE"]
	if !strings.HasPrefix(ip6, "fd00:77::") || env["IPV6_LOCAL"] != "fd00:77::1" || env["IPV6_PREFIX"] != "128" {
		t.Fatalf("connect script: IPV6_REMOTE=%q IPV6_LOCAL=%q IPV6_PREFIX=%q", ip6, env["IPV6_LOCAL"], env["IPV6_PREFIX"])
	}
	waitFor(t, 10*time.Second, "the client's TUN to carry "+ip6, func() bool {
		o, _ := c.ns.output(5*time.Second, "ip", "-6", "addr", "show", "dev", "tun0")
		// Not "tentative": until duplicate address detection is over, the kernel cannot use the address.
		return strings.Contains(o, ip6+"/128") && !strings.Contains(o, "tentative")
	})
	waitFor(t, 10*time.Second, "the client's script to route fd99::/64 into the tunnel", func() bool {
		o, _ := c.ns.output(5*time.Second, "ip", "-6", "route", "show", "dev", "tun0")
		return strings.Contains(o, "fd99::/64")
	})

	const n = 16 << 20
	checkDownload(t, c.ns, "", "http://[fd99::1]:8080", n, 61)
	checkUpload(t, c.ns, "", "http://[fd99::1]:8080", n, 62)
	o, code := c.ns.output(30*time.Second, "curl", "-sS", "--max-time", "5", "-g", "http://[fd99::1]:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from [fd99::1]:8080") {
		t.Fatalf("hello over IPv6: exit %d %q", code, o)
	}
	// The client resolves through the tunnel (its namespace's resolv.conf names the pushed DNS server) and
	// connects to dual.test over IPv6; the server's host has no IPv6 route there, so the flow goes to the name's
	// IPv4 address.
	os.MkdirAll(filepath.Join("/etc/netns", c.ns.name), 0o755) // removed with the namespace
	if err := os.WriteFile(filepath.Join("/etc/netns", c.ns.name, "resolv.conf"), []byte("nameserver 10.250.77.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, code = c.ns.output(30*time.Second, "curl", "-6", "-sS", "--max-time", "10", "http://dual.test:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from 10.77.0.1:8080") {
		t.Fatalf("dual.test over IPv6 with no IPv6 path on the host: exit %d %q, want the IPv4 address's answer", code, o)
	}
	// The server's stderr is read by another goroutine: wait for the line.
	waitFor(t, 10*time.Second, "the server to log the IPv4 fallback", func() bool {
		return strings.Contains(r.s.stderr.String(), "using its name's IPv4 address")
	})
	// Ping over IPv6: re-originated from the host (here with the system ping), answered only when the host is up.
	if !c.ping("fd99::1") {
		t.Fatal("no ICMPv6 echo reply from fd99::1")
	}
	if _, code := c.ns.output(15*time.Second, "ping", "-c", "2", "-W", "2", "-i", "0.3", "fd99::99"); code == 0 {
		t.Fatal("echo reply from fd99::99, which does not exist")
	}
	// fd98::1 is up but outside the routes: a client that routes it anyway is reset.
	c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "-6", "route", "add", "fd98::/64", "dev", "tun0")
	if o, code := c.ns.output(30*time.Second, "curl", "-sS", "--max-time", "5", "-g", "http://[fd98::1]:8080/hello"); code != 7 {
		t.Fatalf("outside the routes over IPv6: exit %d %q, want a refused connection (7)", code, o)
	}
}
