package egress

import (
	"net/netip"
	"testing"

	"ocgate/protocol/datapath"
)

func TestDecide(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	p := NewPolicy(Config{Allow: pfx("127.0.0.1/32"), Deny: pfx("10.77.0.2/32"), HostSockets: true})
	routes := pfx("10.77.0.0/24", "fd00::/64")
	tests := []struct {
		name     string
		routes   []netip.Prefix
		noRoutes []netip.Prefix
		dst      string
		want     Verdict
	}{
		{"inside the routes", routes, nil, "10.77.0.1", Allow},
		{"outside the routes", routes, nil, "10.88.0.1", DenyNotRouted},
		{"deny list wins over routes", routes, nil, "10.77.0.2", DenyListed},
		{"no routes means everything", nil, nil, "192.0.2.1", Allow},
		{"default route means everything", pfx("0.0.0.0/0"), nil, "192.0.2.1", Allow},
		{"v4 default does not route v6", pfx("0.0.0.0/0"), nil, "2001:db8::1", DenyNotRouted},
		{"no-route excludes", nil, pfx("192.0.2.0/24"), "192.0.2.9", DenyNotRouted},
		{"loopback allowed by the allow list", nil, nil, "127.0.0.1", Allow},
		{"other loopback refused", nil, nil, "127.0.0.2", DenySpecial},
		{"v6 loopback refused", nil, nil, "::1", DenySpecial},
		{"v4-mapped loopback refused", nil, nil, "::ffff:127.0.0.2", DenySpecial},
		{"metadata address refused", nil, nil, "169.254.169.254", DenySpecial},
		{"v6 link-local refused", nil, nil, "fe80::1", DenySpecial},
		{"multicast refused", nil, nil, "224.0.0.251", DenySpecial},
		{"broadcast refused", nil, nil, "255.255.255.255", DenySpecial},
		{"unspecified refused", nil, nil, "0.0.0.0", DenySpecial},
		{"v6 inside routes", routes, nil, "fd00::5", Allow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := p.Session(&datapath.Session{Routes: tc.routes, NoRoutes: tc.noRoutes})
			if got := sp.DecideAddr(netip.MustParseAddr(tc.dst)); got != tc.want {
				t.Errorf("Decide(%s) = %v, want %v", tc.dst, got, tc.want)
			}
		})
	}
}

func TestDialerRefusesSpecial(t *testing.T) {
	d := NewDialer(NewPolicy(Config{}))
	if c, err := d.DialContext(t.Context(), "tcp", "127.0.0.1:1"); err == nil {
		c.Close()
		t.Fatal("dialer connected to loopback")
	}
}
