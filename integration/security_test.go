package integration

import (
	"os"
	"path/filepath"
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
