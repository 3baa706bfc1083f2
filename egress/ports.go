package egress

import (
	"encoding/binary"
	"net/netip"
)

// AllowedPacket applies a session's restrict_user_to_ports (allow, see datapath.Session.AllowPort) to one IP
// packet from its client. TCP, UDP and SCTP are judged by their destination port; a first fragment or packet too
// short to hold it is refused. Other protocols are judged with port 0. A non-first fragment passes: it carries no
// ports, and without its first fragment (which was judged) it is useless to the receiver. IPv6 extension headers
// (hop-by-hop, routing, destination options, fragment, AH) are skipped to find the protocol.
func AllowedPacket(pkt []byte, allow func(proto uint8, dst netip.AddrPort) bool) bool {
	var dst netip.Addr
	var proto uint8
	var off int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		off = int(pkt[0]&0x0f) * 4
		if off < 20 {
			return false
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
			return true // a non-first fragment
		}
		proto, dst = pkt[9], netip.AddrFrom4([4]byte(pkt[16:20]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		proto, dst, off = pkt[6], netip.AddrFrom16([16]byte(pkt[24:40])), 40
		for range 8 {
			if len(pkt) < off+8 {
				break
			}
			h := pkt[off:]
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				proto, off = h[0], off+(int(h[1])+1)*8
				continue
			case 44: // fragment
				if binary.BigEndian.Uint16(h[2:4])&^7 != 0 {
					return true // a non-first fragment
				}
				proto, off = h[0], off+8
				continue
			case 51: // authentication header
				proto, off = h[0], off+(int(h[1])+2)*4
				continue
			}
			break
		}
	default:
		return false
	}
	switch proto {
	case 6, 17, 132: // TCP, UDP, SCTP: the destination port is the second 16-bit word of each
		if len(pkt) < off+4 {
			return false
		}
		return allow(proto, netip.AddrPortFrom(dst, binary.BigEndian.Uint16(pkt[off+2:off+4])))
	}
	return allow(proto, netip.AddrPortFrom(dst, 0))
}
