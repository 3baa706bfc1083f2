package egress_test

import (
	"net/netip"
	"testing"

	"ocgate/egress"
	"ocgate/egress/egresstest"
)

func TestParsePacket(t *testing.T) {
	src, dst := netip.MustParseAddr("10.250.77.9"), netip.MustParseAddr("10.77.0.1")
	tcp := func(dport uint16) []byte {
		b := egresstest.UDP(src, dst, 40000, dport, make([]byte, 20))
		b[9] = 6
		return b
	}
	frag := func(b []byte, offset uint16) []byte {
		b = append([]byte(nil), b...)
		b[6], b[7] = byte(offset>>8), byte(offset)
		return b
	}
	v6 := func(next uint8, ext []byte, l4 []byte) []byte {
		b := make([]byte, 40, 40+len(ext)+len(l4))
		b[0], b[6] = 0x60, next
		copy(b[8:24], netip.MustParseAddr("fd00::9").AsSlice())
		copy(b[24:40], netip.MustParseAddr("fd00:1::1").AsSlice())
		return append(append(b, ext...), l4...)
	}
	ports := func(dport uint16) []byte { return []byte{0x9c, 0x40, byte(dport >> 8), byte(dport), 0, 0, 0, 0} }
	d6 := netip.MustParseAddr("fd00:1::1")
	for _, tc := range []struct {
		name string
		pkt  []byte
		ok   bool
		want egress.Flow
	}{
		{"tcp", tcp(8080), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(dst, 8080)}},
		{"udp", egresstest.UDP(src, dst, 1, 8080, nil), true, egress.Flow{Proto: 17, Dst: netip.AddrPortFrom(dst, 8080)}},
		{"icmp", func() []byte { b := egresstest.UDP(src, dst, 0x0800, 0, nil); b[9] = 1; return b }(), true, egress.Flow{Proto: 1, Dst: netip.AddrPortFrom(dst, 0)}},
		{"truncated tcp", tcp(8080)[:22], true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(dst, 0), Short: true}},
		{"header length below 20", func() []byte { b := tcp(8080); b[0] = 0x44; return b }(), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(dst, 0), Short: true}},
		{"first fragment", frag(tcp(8080), 0x2000), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(dst, 8080)}}, // MF set, offset 0
		{"later fragment", frag(tcp(9090), 0x0010), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(dst, 0), NoPorts: true}},
		{"not IP", []byte{0x10, 1, 2}, false, egress.Flow{}},
		{"short IPv4 header", tcp(8080)[:19], false, egress.Flow{}},
		{"ipv6 tcp", v6(6, nil, ports(8080)), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(d6, 8080)}},
		{"ipv6 udp behind hop-by-hop and fragment headers", v6(0, []byte{44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 1}, ports(8080)),
			true, egress.Flow{Proto: 17, Dst: netip.AddrPortFrom(d6, 8080)}},
		{"ipv6 later fragment", v6(44, []byte{6, 0, 0, 8, 0, 0, 0, 1}, ports(9090)), true, egress.Flow{Proto: 6, Dst: netip.AddrPortFrom(d6, 0), NoPorts: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, f, ok := egress.ParsePacket(tc.pkt)
			if ok != tc.ok || f != tc.want {
				t.Errorf("ParsePacket = %+v, %v; want %+v, %v", f, ok, tc.want, tc.ok)
			}
		})
	}
}
