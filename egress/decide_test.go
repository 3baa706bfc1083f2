package egress_test

import (
	"net/netip"
	"testing"

	"ocgate/egress"
	"ocgate/egress/egresstest"
)

// TestDecide runs the shared table (egresstest.Cases) against Decide itself, once per datapath a case describes;
// the netstack and the kernel-TUN port run the same table through their own adapters.
func TestDecide(t *testing.T) {
	for _, on := range []egresstest.Datapaths{egresstest.Netstack, egresstest.TUN} {
		egresstest.ForEach(on, func(c egresstest.Case) {
			t.Run(map[egresstest.Datapaths]string{egresstest.Netstack: "netstack", egresstest.TUN: "tun"}[on]+"/"+c.Name, func(t *testing.T) {
				p := egress.NewPolicy(c.Config(on))
				s, peer := c.Sessions()
				f := egress.Flow{Proto: c.Proto, Dst: c.Dst}
				if peer != nil {
					f.Peer = p.Session(peer)
				}
				if got := p.Session(s).Decide(f); got != c.Want {
					t.Errorf("Decide(%d %s) = %v, want %v", c.Proto, c.Dst, got, c.Want)
				}
			})
		})
	}
}

// TestDecideAllocs: the decision runs per packet in TUN mode; it must not allocate.
func TestDecideAllocs(t *testing.T) {
	c := egresstest.Cases[0]
	p := egress.NewPolicy(c.Config(egresstest.TUN))
	s, _ := c.Sessions()
	sp := p.Session(s)
	pkt := c.Packet()
	if n := testing.AllocsPerRun(100, func() {
		_, f, _ := egress.ParsePacket(pkt)
		sp.Decide(f)
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
}

func TestDialerRefusesSpecial(t *testing.T) {
	d := egress.NewDialer(egress.NewPolicy(egress.Config{}))
	if c, err := d.DialContext(t.Context(), "tcp", "127.0.0.1:1"); err == nil {
		c.Close()
		t.Fatal("dialer connected to loopback")
	}
}

// TestClientKey: a client's IPv6 prefix is one peer; the gateways and addresses outside the pools are none.
func TestClientKey(t *testing.T) {
	p := egress.NewPolicy(egress.Config{Pools: []netip.Prefix{egresstest.Pool, egresstest.Pool6}, ClientBits6: 80,
		Gateways: []netip.Addr{egresstest.Gateway, egresstest.Gateway6}})
	for _, tc := range []struct {
		a, key string
		ok     bool
	}{
		{"10.250.77.9", "10.250.77.9", true},
		{"10.250.77.1", "", false},
		{"fd00:77::1", "", false},
		{"fd00:77:0:0:1:2:3:4", "fd00:77::1:0:0:0", true},
		{"10.77.0.1", "", false},
	} {
		t.Run(tc.a, func(t *testing.T) {
			key, ok := p.Client(netip.MustParseAddr(tc.a))
			if ok != tc.ok || ok && key != netip.MustParseAddr(tc.key) {
				t.Errorf("Client = %v %v, want %v %v", key, ok, tc.key, tc.ok)
			}
		})
	}
}
