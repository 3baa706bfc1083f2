package client

import (
	"encoding/binary"
	"net/netip"
)

// Raw IPv4 packets for tests and the ping load: ICMP echo and UDP, with correct checksums.

func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func ipv4Header(b []byte, proto byte, src, dst netip.Addr, id uint16) {
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	b[8], b[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
}

// ICMPEcho builds an IPv4 ICMP echo request.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	ipv4Header(b, 1, src, dst, seq)
	icmp := b[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
	return b
}

// ParseICMPEchoReply returns the fields of an IPv4 ICMP echo reply.
func ParseICMPEchoReply(p []byte) (src netip.Addr, id, seq uint16, payload []byte, ok bool) {
	hl, ok := parseIPv4(p, 1)
	if !ok || len(p) < hl+8 || p[hl] != 0 {
		return netip.Addr{}, 0, 0, nil, false
	}
	icmp := p[hl:]
	return netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:]), icmp[8:], true
}

// UDP builds an IPv4 UDP datagram.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	ipv4Header(b, 17, src.Addr(), dst.Addr(), 0)
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	// Pseudo header: src, dst, zero, proto, UDP length.
	var ph uint32
	for i := 12; i < 20; i += 2 {
		ph += uint32(b[i])<<8 | uint32(b[i+1])
	}
	ph += 17 + uint32(len(u))
	c := checksum(u, ph)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

// ParseUDP returns the addresses and payload of an IPv4 UDP datagram.
func ParseUDP(p []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	hl, ok := parseIPv4(p, 17)
	if !ok || len(p) < hl+8 {
		return src, dst, nil, false
	}
	u := p[hl:]
	n := int(binary.BigEndian.Uint16(u[4:]))
	if n < 8 || n > len(u) {
		return src, dst, nil, false
	}
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(u[0:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(u[2:]))
	return src, dst, u[8:n], true
}

// parseIPv4 checks an unfragmented IPv4 packet of the given protocol and returns its header length.
func parseIPv4(p []byte, proto byte) (int, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != proto {
		return 0, false
	}
	hl := int(p[0]&0x0f) * 4
	if hl < 20 || len(p) < hl {
		return 0, false
	}
	if tl := int(binary.BigEndian.Uint16(p[2:])); tl < len(p) && tl >= hl {
		p = p[:tl]
	}
	if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 { // MF or offset: a fragment
		return 0, false
	}
	return hl, true
}
