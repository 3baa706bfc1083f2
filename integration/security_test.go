package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIPv6FallbackIsPerSession: the IPv6→IPv4 fallback (a flow to an IPv6 address the host cannot reach goes to
// its name's IPv4 address) uses only names that the same session's DNS queries returned. Two names share an IPv6
// address: dual.test (IPv4 10.77.0.1, alice's) and evil.test (IPv4 10.77.0.2, chosen by bob). With one cache for all
// sessions, bob resolving evil.test after alice resolved dual.test sent alice's next flow to 10.77.0.2.
func TestIPv6FallbackIsPerSession(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	hosts := filepath.Join("/etc/netns", ns.name, "hosts")
	f, err := os.OpenFile(hosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// fd97::/64 has no route on the server's host.
	f.WriteString("fd97::1 dual.test\n10.77.0.1 dual.test\nfd97::1 evil.test\n10.77.0.2 evil.test\n")
	f.Close()
	r := newRigIn(t, ns, false, "ipv6_network = \"fd00:77::/64\"\nroute = [\"10.77.0.0/24\", \"fd97::/64\"]")
	alice, bob := r.connect(vpnUser), r.connect("bob")
	for _, c := range []*tunClient{alice, bob} {
		os.MkdirAll(filepath.Join("/etc/netns", c.ns.name), 0o755) // removed with the namespace
		if err := os.WriteFile(filepath.Join("/etc/netns", c.ns.name, "resolv.conf"), []byte("nameserver 10.250.77.1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the client's TUN to carry an IPv6 address", func() bool {
			o, _ := c.ns.output(5*time.Second, "ip", "-6", "addr", "show", "dev", "tun0")
			return strings.Contains(o, "fd00:77::")
		})
	}
	// alice resolves and reaches dual.test over IPv6, which the server carries to 10.77.0.1.
	o, code := alice.ns.output(30*time.Second, "curl", "-6", "-sS", "--max-time", "10", "http://dual.test:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from 10.77.0.1:8080") {
		t.Fatalf("alice, dual.test over IPv6: exit %d %q, want 10.77.0.1's answer", code, o)
	}
	// bob resolves evil.test, whose IPv6 address is dual.test's.
	if o, code := bob.ns.output(30*time.Second, "getent", "ahostsv6", "evil.test"); code != 0 || !strings.Contains(o, "fd97::1") {
		t.Fatalf("bob resolving evil.test: exit %d %q", code, o)
	}
	// alice's next flow to that address (as a literal, so she does not resolve again) still goes to dual.test's
	// IPv4 address.
	o, code = alice.ns.output(30*time.Second, "curl", "-sS", "--max-time", "10", "-g", "http://[fd97::1]:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from 10.77.0.1:8080") {
		t.Fatalf("alice to [fd97::1] after bob resolved evil.test: exit %d %q, want 10.77.0.1's answer", code, o)
	}
	// bob's own flow to it goes where his own answer said.
	o, code = bob.ns.output(30*time.Second, "curl", "-sS", "--max-time", "10", "-g", "http://[fd97::1]:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from 10.77.0.2:8080") {
		t.Fatalf("bob to [fd97::1]: exit %d %q, want 10.77.0.2's answer", code, o)
	}
}

// rssKiB is the resident memory of process pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestDNSFloodBounded: a user flooding the built-in DNS (256 source ports, as fast as the tunnel carries them) while
// its upstream never answers — the worst case, where every query would wait — is refused beyond its bounds: the
// server's memory stays put, it logs the refusal, and another user's traffic keeps moving.
func TestDNSFloodBounded(t *testing.T) {
	// Not parallel: the attack loads both cores, and a neighbour's download through ocproxy then fails
	// ("transfer closed"); alone, the only client it can disturb is the one it measures.
	ns := newNetns(t)
	up := ns.start(nil, targetBin, "-silent", "127.0.0.1:5353")
	waitFor(t, 10*time.Second, "the silent upstream", func() bool { return strings.Contains(up.out.String(), "ready") || up.exited() })
	r := newRigIn(t, ns, false, "dns_upstream = [\"127.0.0.1:5353\"]\nroute = [\"10.77.0.0/24\"]")
	attacker, other := r.connect(vpnUser), r.connect("bob")
	pid := r.s.proc.cmd.Process.Pid
	before := rssKiB(t, pid)
	flood := attacker.ns.start(nil, targetBin, "-dnsflood", "10.250.77.1:53", "-flows", "256", "-count", "200000", "-for", "5s")
	// Another user's data still crosses while the attacker's queries are held.
	checkDownload(t, other.ns, "", "http://10.77.0.1:8080", 4<<20, 71)
	peak := before
	waitFor(t, 60*time.Second, "the flood to end", func() bool {
		peak = max(peak, rssKiB(t, pid))
		return flood.exited()
	})
	t.Logf("flood: %s; server RSS %d KiB before, %d KiB at most during", strings.TrimSpace(flood.out.String()), before, peak)
	var sent, answered int
	if _, err := fmt.Sscanf(flood.out.String(), "sent %d answered %d", &sent, &answered); err != nil {
		t.Fatalf("the flood failed: %s", flood.out.String())
	}
	// The session's rate is 100 queries a second with a burst of 200: over the 5 s of the flood and the 5 s its
	// last queries wait for the upstream, at most 1,200 are even looked at (each ends as SERVFAIL). Without the
	// bounds, several thousand were, and each held a goroutine for 5 s.
	if answered > 1200 || sent < 10*answered {
		t.Fatalf("%d of %d queries answered, want at most 1,200", answered, sent)
	}
	if peak-before > 48<<10 {
		t.Fatalf("the server's RSS grew by %d KiB during the flood (from %d KiB), want < 48 MiB", peak-before, before)
	}
	waitFor(t, 10*time.Second, "the refusal to be logged", func() bool {
		return strings.Contains(r.s.stderr.String(), "DNS queries over the per-session rate") ||
			strings.Contains(r.s.stderr.String(), "DNS flows over the per-session cap")
	})
}

// TestHostAddressesRefused: with route = ["default"], a user reaches nothing of the server's host through the
// netstack: neither a service bound to the host's LAN address, nor one bound to 0.0.0.0 (reached at that address),
// nor the server's own listener, nor the same address in NAT64's form; a datagram to the LAN's directed broadcast
// is refused. Once egress_allow names
// the address, its service is reachable.
func TestHostAddressesRefused(t *testing.T) {
	t.Parallel()
	for _, allowed := range []bool{false, true} {
		ns := newNetns(t)
		// The server host's LAN: 10.55.0.1/24 (broadcast 10.55.0.255) on a veth whose peer stays in the same
		// namespace (no dummy interfaces here).
		ns.must("ip", "-n", ns.name, "link", "add", "hostlan", "type", "veth", "peer", "name", "hostlan-peer")
		ns.must("ip", "-n", ns.name, "addr", "add", "10.55.0.1/24", "dev", "hostlan")
		ns.must("ip", "-n", ns.name, "link", "set", "hostlan", "up")
		ns.must("ip", "-n", ns.name, "link", "set", "hostlan-peer", "up")
		svc := ns.start(nil, targetBin, "-listen", "10.55.0.1:9090,0.0.0.0:9091")
		waitFor(t, 10*time.Second, "the host's services", func() bool { return strings.Contains(svc.out.String(), "ready") || svc.exited() })
		config := "route = [\"default\"]\nipv6_network = \"fd00:77::/64\""
		if allowed {
			config += "\negress_allow = [\"10.55.0.1/32\"]"
		}
		r := newRigIn(t, ns, false, config)
		c := r.connect(vpnUser)
		get := func(url string) (string, int) {
			return c.ns.output(30*time.Second, "curl", "-sS", "-k", "--max-time", "5", url)
		}
		if !allowed {
			for _, url := range []string{"http://10.55.0.1:9090/hello", "http://10.55.0.1:9091/hello", "https://10.55.0.1:8443/"} {
				if o, code := get(url); code != 7 {
					t.Errorf("%s: exit %d %q, want a refused connection (7)", url, code, o)
				}
			}
			c.ns.output(10*time.Second, "bash", "-c", "echo x > /dev/udp/10.55.0.255/137")
			waitFor(t, 10*time.Second, "the broadcast datagram to be refused", func() bool {
				return strings.Contains(r.s.stderr.String(), `dst=10.55.0.255:137 why="an address of the server's host"`)
			})
			// The host's address embedded in NAT64's prefix (64:ff9b::10.55.0.1) is the host's address too.
			waitFor(t, 10*time.Second, "the client's IPv6 address", func() bool {
				o, _ := c.ns.output(5*time.Second, "ip", "-6", "addr", "show", "dev", "tun0")
				return strings.Contains(o, "fd00:77::") && !strings.Contains(o, "tentative")
			})
			c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "-6", "route", "add", "64:ff9b::/96", "dev", "tun0")
			get("http://[64:ff9b::a37:1]:9090/hello")
			waitFor(t, 10*time.Second, "the NAT64 form to be refused", func() bool {
				return strings.Contains(r.s.stderr.String(), `dst=[64:ff9b::a37:1]:9090 why="an address of the server's host"`)
			})
			// Targets that egress_allow names (the harness publishes the test targets) stay reachable.
			if o, code := get("http://10.77.0.1:8080/hello"); code != 0 || !strings.Contains(o, "hello from 10.77.0.1:8080") {
				t.Errorf("a published target: exit %d %q", code, o)
			}
			continue
		}
		if o, code := get("http://10.55.0.1:9090/hello"); code != 0 || !strings.Contains(o, "hello from 10.55.0.1:9090") {
			t.Errorf("with egress_allow naming it: exit %d %q", code, o)
		}
		if o, code := get("http://10.55.0.1:9091/hello"); code != 0 || !strings.Contains(o, "hello from 0.0.0.0:9091") {
			t.Errorf("the 0.0.0.0 service at an allowed address: exit %d %q", code, o)
		}
	}
}

// TestHostFlowsBudget: with a 400-descriptor limit, a user opening 600 UDP flows gets at most its share of the
// server's host sockets (refused and logged beyond it), and another user's download and a new login still work.
// Before the budget, one user's flows took every descriptor: other users' flows and logins failed with "too many
// open files".
func TestHostFlowsBudget(t *testing.T) {
	// Not parallel: the flood and the low limit are what is measured, not a neighbour's load.
	ns := newNetns(t)
	r := newRigIn(t, ns, false, "route = [\"10.77.0.0/24\"]", "prlimit", "--nofile=400:400", "--")
	attacker, other := r.connect(vpnUser), r.connect("bob")
	flood := attacker.ns.start(nil, targetBin, "-udpflows", "10.77.0.1:8080", "-count", "600", "-for", "20s")
	waitFor(t, 20*time.Second, "the flood's flows to be refused beyond the session's share", func() bool {
		return strings.Contains(r.s.stderr.String(), "flows over the session's share of the server's host sockets")
	})
	checkDownload(t, other.ns, "", "http://10.77.0.1:8080", 1<<20, 81)
	r.connect("carol")
	if strings.Contains(r.s.stderr.String(), "too many open files") {
		t.Fatalf("the server ran out of descriptors:\n%s", r.s.stderr.String())
	}
	flood.stop(5 * time.Second)
}
