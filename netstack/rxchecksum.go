package netstack

import (
	"encoding/binary"

	tcpipchecksum "gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// checksumsValid verifies what gVisor would have verified of a packet from a client, had the link not declared
// receive checksum offload (link.go): the IPv4 header checksum, and the TCP or UDP checksum of an unfragmented
// packet (IPv4 without options or with; IPv6 with the transport header first). One pass over the bytes, as gVisor's
// own check was. Packets whose layout it does not follow (too short, lengths past the end, IPv6 extension
// headers, fragments) pass: gVisor's parsing rejects malformed ones, and the transport checksum of a fragmented
// or extension-header packet goes unverified; the tunnel's AEAD has already verified every byte the client sent.
func checksumsValid(pkt []byte) bool {
	var seg []byte
	var xsum uint16
	if len(pkt) == 0 {
		return true
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return true
		}
		ihl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total < ihl || total > len(pkt) {
			return true
		}
		if tcpipchecksum.Checksum(pkt[:ihl], 0) != 0xffff {
			return false
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // more fragments, or an offset
			return true
		}
		seg = pkt[ihl:total]
		xsum = tcpipchecksum.Checksum(pkt[12:20], 0) // source and destination
	case 6:
		if len(pkt) < 40 {
			return true
		}
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if total > len(pkt) {
			return true
		}
		seg = pkt[40:total]
		xsum = tcpipchecksum.Checksum(pkt[8:40], 0)
	default:
		return true
	}
	proto := pkt[9]
	if pkt[0]>>4 == 6 {
		proto = pkt[6]
	}
	switch proto {
	case tcpProtocolNumber:
		if len(seg) < 20 {
			return true
		}
	case udpProtocolNumber:
		if len(seg) < 8 {
			return true
		}
		if pkt[0]>>4 == 4 && seg[6] == 0 && seg[7] == 0 {
			return true // no checksum (IPv4 only)
		}
	default:
		return true
	}
	xsum = tcpipchecksum.Combine(xsum, uint16(proto))
	xsum = tcpipchecksum.Combine(xsum, uint16(len(seg)))
	return tcpipchecksum.Checksum(seg, xsum) == 0xffff
}
