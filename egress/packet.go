package egress

import (
	"encoding/binary"
	"net/netip"
)

// ParsePacket reads what the policy judges of one IP packet from a client: its source and its Flow (without
// Peer). ok is false when pkt is neither IPv4 nor IPv6 or too short for its IP header. TCP, UDP and SCTP get
// their destination port; a first fragment or packet too short to hold it is Short (as is an IPv4 header length
// below 20). Other protocols get port 0. A non-first fragment is NoPorts. IPv6 extension headers (hop-by-hop,
// routing, destination options, fragment, AH) are skipped to find the protocol. It does not allocate.
func ParsePacket(pkt []byte) (src netip.Addr, f Flow, ok bool) {
	var dst netip.Addr
	var off int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		f.Proto, off = pkt[9], int(pkt[0]&0x0f)*4
		if off < 20 {
			f.Dst, f.Short = netip.AddrPortFrom(dst, 0), true
			return src, f, true
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
			f.Dst, f.NoPorts = netip.AddrPortFrom(dst, 0), true
			return src, f, true
		}
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		f.Proto, off = pkt[6], 40
	ext:
		for range 8 {
			if len(pkt) < off+8 {
				break
			}
			h := pkt[off:]
			switch f.Proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				f.Proto, off = h[0], off+(int(h[1])+1)*8
			case 44: // fragment
				if binary.BigEndian.Uint16(h[2:4])&^7 != 0 {
					f.Proto, f.Dst, f.NoPorts = h[0], netip.AddrPortFrom(dst, 0), true
					return src, f, true
				}
				f.Proto, off = h[0], off+8
			case 51: // authentication header
				f.Proto, off = h[0], off+(int(h[1])+2)*4
			default:
				break ext
			}
		}
	default:
		return netip.Addr{}, Flow{}, false
	}
	f.Dst = netip.AddrPortFrom(dst, 0)
	switch f.Proto {
	case protoTCP, protoUDP, protoSCTP: // the destination port is the second 16-bit word of each
		if len(pkt) < off+4 {
			f.Short = true
		} else {
			f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(pkt[off+2:off+4]))
		}
	}
	return src, f, true
}
