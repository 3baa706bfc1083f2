//go:build linux

package tun

import (
	"testing"

	"ocgate/egress"
	"ocgate/egress/egresstest"
	"ocgate/protocol/datapath"
)

// TestDecisionTable runs the shared egress table through the port's per-packet check (no device needed): a
// crafted packet from the client, the peer session registered as Attach does.
func TestDecisionTable(t *testing.T) {
	egresstest.ForEach(egresstest.TUN, func(c egresstest.Case) {
		t.Run(c.Name, func(t *testing.T) {
			d, err := New(Config{Prefix: "tst", Local: egresstest.Gateway, Local6: egresstest.Gateway6,
				Pool: egresstest.Pool, Pool6: egresstest.Pool6})
			if err != nil {
				t.Fatal(err)
			}
			s, peer := c.Sessions()
			p := newTUNPort(d, s, nil, "tst0")
			d.register(p)
			if peer != nil {
				d.register(newTUNPort(d, peer, nil, "tst1"))
			}
			if v, ok := p.check(c.Packet()); !ok || v != c.Want {
				t.Errorf("check(%d %s) = %v (source ok: %v), want %v", c.Proto, c.Dst, v, ok, c.Want)
			}
		})
	})
}

// TestCheckSource: packets whose source is not the session's (or behind its iroutes) fail the check.
func TestCheckSource(t *testing.T) {
	d, err := New(Config{Prefix: "tst", Local: egresstest.Gateway, Pool: egresstest.Pool})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := egresstest.Case{}.Sessions()
	p := newTUNPort(d, s, nil, "tst0")
	if _, ok := p.check(egresstest.UDP(egresstest.Peer[0], egresstest.Gateway, 1, 2, nil)); ok {
		t.Error("a spoofed source passed")
	}
	if _, ok := p.check([]byte{0x45, 0}); ok {
		t.Error("a truncated packet passed")
	}
	if _, ok := p.check(egresstest.UDP(egresstest.Client[0], egresstest.Gateway, 1, 2, nil)); !ok {
		t.Error("the client's own source failed")
	}
}

// TestCheckAllocs: the check runs per packet; it must not allocate, to another client's address included.
func TestCheckAllocs(t *testing.T) {
	d, err := New(Config{Prefix: "tst", Local: egresstest.Gateway, Pool: egresstest.Pool})
	if err != nil {
		t.Fatal(err)
	}
	s, peer := egresstest.Case{PeerSession: &datapath.Session{ClientToClient: true}}.Sessions()
	s.ClientToClient, s.RestrictToRoutes = true, true
	p := newTUNPort(d, s, nil, "tst0")
	d.register(p)
	d.register(newTUNPort(d, peer, nil, "tst1"))
	pkt := egresstest.UDP(egresstest.Client[0], egresstest.Peer[0], 1, 2, nil)
	if v, ok := p.check(pkt); !ok || v != egress.Allow {
		t.Fatalf("check: %v %v", v, ok)
	}
	if n := testing.AllocsPerRun(100, func() { p.check(pkt) }); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
}
