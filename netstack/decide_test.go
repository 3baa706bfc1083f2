package netstack

import (
	"log/slog"
	"testing"

	"ocgate/egress"
	"ocgate/egress/egresstest"
)

// TestDecisionTable runs the shared egress table through the stack's two decisions: the switch's for a packet to
// an attached client (decidePacket), the forwarders' for everything else (decide).
func TestDecisionTable(t *testing.T) {
	egresstest.ForEach(egresstest.Netstack, func(c egresstest.Case) {
		t.Run(c.Name, func(t *testing.T) {
			cfg := c.Config(egresstest.Netstack)
			s, err := New(Config{Gateway: egresstest.Gateway, Pool: egresstest.Pool, Gateway6: egresstest.Gateway6,
				Pool6: egresstest.Pool6, Policy: egress.Config{Allow: cfg.Allow, Deny: cfg.Deny, HostAddrs: cfg.HostAddrs}, ICMP: "off",
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sess, peer := c.Sessions()
			sess.Deliver = func([]byte) {}
			pp, err := s.Attach(sess)
			if err != nil {
				t.Fatal(err)
			}
			if peer != nil {
				peer.Deliver = func([]byte) {}
				if _, err := s.Attach(peer); err != nil {
					t.Fatal(err)
				}
			}
			p := pp.(*port)
			var got egress.Verdict
			if q := p.peer(c.Dst.Addr()); q != nil {
				got = p.decidePacket(c.Packet(), q)
			} else {
				got = p.decide(c.Proto, c.Dst)
			}
			if got != c.Want {
				t.Errorf("%d %s: %v, want %v", c.Proto, c.Dst, got, c.Want)
			}
		})
	})
}
