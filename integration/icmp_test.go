package integration

import (
	"strings"
	"testing"
	"time"
)

// TestICMPEcho: in netstack mode a client on a real TUN pings through the tunnel. A reachable target answers, an
// unassigned address inside the routes does not (the server does not invent replies), a destination outside the
// routes gets "administratively prohibited" — with each way the unprivileged server can send ICMP: an unprivileged
// ICMP socket (ping_group_range opened in the server's namespace), a raw socket (CAP_NET_RAW), the system ping.
func TestICMPEcho(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		sysctl   bool     // open net.ipv4.ping_group_range in the server's namespace
		setpriv  []string // capabilities for the server
		strategy string   // as the server logs it
	}{
		{"socket", true, nil, "unprivileged ICMP socket"},
		{"raw", false, []string{"--inh-caps=+net_raw", "--ambient-caps=+net_raw"}, "raw ICMP socket"},
		{"exec", false, nil, "system ping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			if tc.sysctl {
				ns.must("ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
			}
			r := newRigIn(t, ns, false, `route = ["10.77.0.0/24"]`, tc.setpriv...)
			if !strings.Contains(r.s.stderr.String(), "ICMP echo re-originated with the "+tc.strategy) {
				t.Fatalf("the server did not pick the %s:\n%s", tc.strategy, r.s.stderr.String())
			}
			c := r.connect(vpnUser)
			if !c.ping("10.77.0.1") {
				t.Fatal("no echo reply from 10.77.0.1, which is up")
			}
			if _, code := c.ns.output(15*time.Second, "ping", "-c", "2", "-W", "2", "-i", "0.3", "10.77.0.99"); code == 0 {
				t.Fatal("echo reply from 10.77.0.99, which does not exist")
			}
			if tc.name == "exec" {
				// TCP to an address the server's host has no route to: ICMP network unreachable comes back, so
				// the connection fails at once (curl 7) instead of timing out (curl 28).
				if o, code := c.ns.output(30*time.Second, "curl", "-sS", "--max-time", "20", "http://10.77.0.99:8080/"); code != 7 {
					t.Errorf("TCP to an unroutable host: curl exit %d %q, want 7 (unreachable)", code, o)
				}
				// UDP to a closed port of a reachable host: ICMP port unreachable comes back to the client,
				// whose connected socket (bash's /dev/udp) reports it.
				o, _ := c.ns.output(30*time.Second, "bash", "-c", "exec 3<>/dev/udp/10.77.0.1/9; echo x >&3; read -t 5 <&3")
				if !strings.Contains(o, "Connection refused") {
					t.Errorf("UDP to a closed port: %q, want the client's socket to see Connection refused", o)
				}
			}
			c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "route", "add", "10.88.0.1/32", "dev", "tun0")
			out, _ := c.ns.output(15*time.Second, "ping", "-c", "1", "-W", "3", "10.88.0.1")
			if !strings.Contains(out, "Packet filtered") {
				t.Fatalf("ping outside the routes: want ICMP administratively prohibited (\"Packet filtered\"):\n%s", out)
			}
		})
	}
}
