//go:build linux

package egress

import (
	"net/netip"
	"testing"
)

func TestAllowedPacket(t *testing.T) {
	src, dst := netip.MustParseAddr("10.250.77.9"), netip.MustParseAddr("10.77.0.1")
	type asked struct {
		proto uint8
		dst   netip.AddrPort
	}
	var got []asked
	only8080 := func(proto uint8, d netip.AddrPort) bool {
		got = append(got, asked{proto, d})
		return proto == 6 && d.Port() == 8080
	}
	tcp := func(dport uint16) []byte {
		b := udpPacket(src, dst, 40000, dport, make([]byte, 20))
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
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
		ask  asked // zero: not asked
	}{
		{"tcp allowed", tcp(8080), true, asked{6, netip.AddrPortFrom(dst, 8080)}},
		{"tcp refused", tcp(9090), false, asked{6, netip.AddrPortFrom(dst, 9090)}},
		{"udp on the allowed port", udpPacket(src, dst, 1, 8080, nil), false, asked{17, netip.AddrPortFrom(dst, 8080)}},
		{"icmp", func() []byte { b := udpPacket(src, dst, 0x0800, 0, nil); b[9] = 1; return b }(), false, asked{1, netip.AddrPortFrom(dst, 0)}},
		{"truncated tcp", tcp(8080)[:22], false, asked{}},
		{"first fragment", frag(tcp(8080), 0x2000), true, asked{6, netip.AddrPortFrom(dst, 8080)}}, // MF set, offset 0
		{"later fragment", frag(tcp(9090), 0x0010), true, asked{}},
		{"not IP", []byte{0x10, 1, 2}, false, asked{}},
		{"ipv6 tcp", v6(6, nil, ports(8080)), true, asked{6, netip.AddrPortFrom(netip.MustParseAddr("fd00:1::1"), 8080)}},
		{"ipv6 udp behind hop-by-hop and fragment headers", v6(0, []byte{44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 1}, ports(8080)),
			false, asked{17, netip.AddrPortFrom(netip.MustParseAddr("fd00:1::1"), 8080)}},
		{"ipv6 later fragment", v6(44, []byte{6, 0, 0, 8, 0, 0, 0, 1}, ports(9090)), true, asked{}},
	} {
		got = nil
		if ok := AllowedPacket(tc.pkt, only8080); ok != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, ok, tc.want)
		}
		switch {
		case tc.ask == (asked{}) && len(got) != 0:
			t.Errorf("%s: asked %v, want no question", tc.name, got)
		case tc.ask != (asked{}) && (len(got) != 1 || got[0] != tc.ask):
			t.Errorf("%s: asked %v, want %v", tc.name, got, tc.ask)
		}
	}
}
