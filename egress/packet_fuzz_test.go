package egress_test

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"ocgate/egress"
	"ocgate/egress/egresstest"
)

// FuzzParsePacket: ParsePacket never panics, and where gVisor's header package reads the same fields (IPv4, and
// IPv6 without extension headers) it agrees; the decision on what it returns never panics either.
func FuzzParsePacket(f *testing.F) {
	c := egresstest.Cases[0]
	for _, c := range egresstest.Cases[:8] {
		f.Add(c.Packet())
	}
	f.Add(egresstest.UDP(egresstest.Client[0], egresstest.Peer[0], 1, 53, []byte("x")))
	p := egress.NewPolicy(c.Config(egresstest.Netstack))
	s, _ := c.Sessions()
	sp := p.Session(s)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, fl, ok := egress.ParsePacket(pkt)
		sp.Decide(fl)
		switch {
		case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
			ip := header.IPv4(pkt)
			if !ok || src != netip.AddrFrom4(ip.SourceAddress().As4()) || fl.Dst.Addr() != netip.AddrFrom4(ip.DestinationAddress().As4()) ||
				fl.Proto != ip.Protocol() {
				t.Fatalf("IPv4: %v %+v %v", src, fl, ok)
			}
			hl := int(ip.HeaderLength())
			wantPort, short, frag := uint16(0), hl < header.IPv4MinimumSize, ip.FragmentOffset() != 0
			if l4 := ip.Protocol(); !short && !frag && (l4 == 6 || l4 == 17 || l4 == 132) {
				if len(pkt) < hl+4 {
					short = true
				} else {
					wantPort = header.UDP(pkt[hl:]).DestinationPort() // the same place in TCP and SCTP
				}
			}
			if fl.Short != short || fl.NoPorts != (frag && !short) || fl.Dst.Port() != wantPort {
				t.Fatalf("IPv4 ports: %+v, want port %d short %v fragment %v", fl, wantPort, short, frag)
			}
		case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
			ip := header.IPv6(pkt)
			if !ok || src != netip.AddrFrom16(ip.SourceAddress().As16()) || fl.Dst.Addr() != netip.AddrFrom16(ip.DestinationAddress().As16()) {
				t.Fatalf("IPv6: %v %+v %v", src, fl, ok)
			}
			switch next := ip.NextHeader(); next {
			case 0, 43, 44, 51, 60: // extension headers: no simple reference
			case 6, 17, 132:
				short := len(pkt) < header.IPv6MinimumSize+4
				if fl.Proto != next || fl.Short != short || !short && fl.Dst.Port() != header.UDP(pkt[40:]).DestinationPort() {
					t.Fatalf("IPv6 ports: %+v", fl)
				}
			default:
				if fl.Proto != next || fl.Dst.Port() != 0 || fl.Short || fl.NoPorts {
					t.Fatalf("IPv6 protocol %d: %+v", next, fl)
				}
			}
		default:
			if ok {
				t.Fatalf("not an IP packet, parsed: %v %+v", src, fl)
			}
		}
	})
}
