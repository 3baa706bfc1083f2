//go:build linux

package tun

import (
	"net/netip"
	"testing"

	"ocgate/egress"
	"ocgate/egress/egresstest"
	"ocgate/protocol/datapath"
)

// FuzzCheck: the port's per-packet check never panics on raw packets, passes only the client's own source, and
// with restrict_user_to_routes passes only destinations inside the routes or the gateway, read here with a
// plain reference parse of the IP header.
func FuzzCheck(f *testing.F) {
	for _, c := range egresstest.Cases[:12] {
		f.Add(c.Packet())
	}
	f.Add(egresstest.UDP(egresstest.Client[0], egresstest.Peer[0], 1, 53, nil))
	routes := []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd99::/64")}
	d, err := New(Config{Prefix: "tst", Local: egresstest.Gateway, Local6: egresstest.Gateway6,
		Pool: egresstest.Pool, Pool6: egresstest.Pool6})
	if err != nil {
		f.Fatal(err)
	}
	s, peer := egresstest.Case{PeerSession: &datapath.Session{ClientToClient: true}}.Sessions()
	s.Routes, s.RestrictToRoutes, s.ClientToClient = routes, true, true
	s.Ports = datapath.PortRules{Deny: true, Rules: []datapath.PortRule{{Proto: 6, Port: 25}}}
	p := newTUNPort(d, s, nil, "tst0")
	d.register(p)
	d.register(newTUNPort(d, peer, nil, "tst1"))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		v, ok := p.check(pkt)
		var src, dst netip.Addr
		switch {
		case len(pkt) >= 20 && pkt[0]>>4 == 4:
			src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		case len(pkt) >= 40 && pkt[0]>>4 == 6:
			src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		}
		own := src.IsValid() && (src == egresstest.Client[0] || src == egresstest.Client[1])
		if ok != own {
			t.Fatalf("source %s: check ok = %v", src, ok)
		}
		if ok && v == egress.Allow {
			inRoutes := routes[0].Contains(dst) || routes[1].Contains(dst)
			if !inRoutes && dst != egresstest.Gateway && dst != egresstest.Gateway6 {
				t.Fatalf("%s allowed outside the routes", dst)
			}
		}
	})
}
