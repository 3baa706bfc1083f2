package tun

// Segmentation offloads on a TUN device opened with IFF_VNET_HDR: every packet crossing the device has a
// virtio-net header in front of it, and with it one write(2) or read(2) may carry up to 64 KiB of one TCP flow.
//
//	client packets ─► coalescer.add: TCP segments of one flow that follow each other are merged (GRO rules below)
//	                  ─► segment.finish: IP lengths, the pseudo-header checksum, the header (GSO TCPV4/TCPV6)
//	device reads   ─► split: a TSO burst cut in place into MTU-sized packets, each with its own checksums
//
// The kernel cuts a merged segment again where it must (forwarding to a device without TSO), or hands it whole to a
// local socket: either way one system call and one trip through the stack instead of one per packet.
//
// Merging follows the kernel's own GRO (tcp_gro_receive, inet_gro_receive, ipv6_gro_receive): same addresses and
// ports; IPv4 without options or fragmentation, equal TOS, TTL and DF; IPv6 with TCP as the next header, equal
// first word (version, traffic class, flow label) and hop limit; equal ACK number, window and TCP options;
// contiguous sequence numbers; only ACK or ACK|PSH set, and nothing after a PSH or after a segment shorter than
// the first; every merged packet's TCP checksum verified first (a merged segment gets a fresh one, which must not
// launder a corrupted packet). A packet that does not qualify is written as it came, behind an empty header.

import (
	"encoding/binary"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// The virtio-net header (struct virtio_net_hdr, linux/virtio_net.h) in front of every packet, in the host's byte
// order (no TUNSETVNETLE/BE is set).
const (
	vnetHdrLen = 10

	vnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csumStart, stored at csumStart+csumOffset

	gsoNone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4 = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
	gsoTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6
)

type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h vnetHdr) put(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

func getVnetHdr(b []byte) vnetHdr {
	return vnetHdr{flags: b[0], gsoType: b[1], hdrLen: binary.NativeEndian.Uint16(b[2:]),
		gsoSize: binary.NativeEndian.Uint16(b[4:]), csumStart: binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:])}
}

const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagCWR = 0x80

	protoTCP = 6
	protoUDP = 17

	// maxIPPacket bounds a merged segment: an IPv4 total length (and, kept the same, an IPv6 packet's).
	maxIPPacket = 65535
	// maxBatchSegments is how many segments one batch holds before add reports it full.
	maxBatchSegments = 32
	// smallSegment is the buffer for a packet that cannot grow by merging; bigger ones take a maxIPPacket buffer.
	smallSegment = 2048
)

// Segment buffers are pooled across ports: a port holds them only between add and the write (and readLoop a big
// one from the device being readable to the last packet delivered).
var (
	bigSegBufs   = sync.Pool{New: func() any { return new([vnetHdrLen + maxIPPacket]byte) }}
	smallSegBufs = sync.Pool{New: func() any { return new([vnetHdrLen + smallSegment]byte) }}
)

// segment is one packet to write: the virtio-net header room, then the packet, grown by merging.
type segment struct {
	buf []byte // vnetHdrLen + packet
	big *[vnetHdrLen + maxIPPacket]byte
	sml *[vnetHdrLen + smallSegment]byte

	// iphLen and tcphLen are set for a TCP packet (tcpHeaders), 0 otherwise: the flow's later packets look for
	// its latest segment by them.
	iphLen, tcphLen int

	tcp     bool // a merge may extend it: the fields below apply
	v6      bool
	checked bool // the first packet's checksum was verified
	ended   bool // PSH or a short packet: nothing may follow
	gsoSize int
	nextSeq uint32
	merged  int // packets appended to the first
}

func (s *segment) pkt() []byte { return s.buf[vnetHdrLen:] }

func (s *segment) release() {
	if s.big != nil {
		bigSegBufs.Put(s.big)
	}
	if s.sml != nil {
		smallSegBufs.Put(s.sml)
	}
	*s = segment{}
}

// tcpHeaders returns the header lengths of a TCP packet over IPv4 without options or fragmentation, or over
// IPv6 with TCP as the next header; ok is false for anything else.
func tcpHeaders(pkt []byte) (iphLen, tcphLen int, ok bool) {
	switch {
	case len(pkt) >= 20 && pkt[0] == 0x45:
		if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || pkt[9] != protoTCP || pkt[6]&0x3f != 0 || pkt[7] != 0 {
			return 0, 0, false // another protocol, a fragment, or a length that does not match
		}
		iphLen = 20
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) || pkt[6] != protoTCP {
			return 0, 0, false
		}
		iphLen = 40
	default:
		return 0, 0, false
	}
	if len(pkt) < iphLen+20 {
		return 0, 0, false
	}
	tcphLen = int(pkt[iphLen+12]>>4) * 4
	if tcphLen < 20 || len(pkt) < iphLen+tcphLen {
		return 0, 0, false
	}
	return iphLen, tcphLen, true
}

// mergeable reports whether a TCP packet (see tcpHeaders) may start or extend a merged segment: it carries data
// and has only ACK, or ACK and PSH, set.
func mergeable(pkt []byte, iphLen, tcphLen int) bool {
	f := pkt[iphLen+13]
	return len(pkt) > iphLen+tcphLen && (f == tcpFlagACK || f == tcpFlagACK|tcpFlagPSH)
}

// coalescer collects the packets of one batch, merging TCP segments as they arrive. Not safe for concurrent use.
type coalescer struct {
	segs []segment
	gro  bool // merge; false: every packet is written as it came (the device has no offloads)
}

func (c *coalescer) full() bool { return len(c.segs) >= maxBatchSegments }

// add copies pkt into the batch, appending it to a segment of its flow when the rules allow. The caller checks
// full first; pkt must be at most maxIPPacket long.
func (c *coalescer) add(pkt []byte) {
	iphLen, tcphLen, isTCP := 0, 0, false
	if c.gro {
		iphLen, tcphLen, isTCP = tcpHeaders(pkt)
	}
	cand := isTCP && mergeable(pkt, iphLen, tcphLen)
	if isTCP {
		// Only the flow's latest segment may take it: packets of one flow stay in order.
		for i := len(c.segs) - 1; i >= 0; i-- {
			s := &c.segs[i]
			if s.iphLen == iphLen && sameFlow(s.pkt(), pkt, iphLen) {
				if cand && s.tcp && s.tcphLen == tcphLen && c.merge(s, pkt) {
					return
				}
				break
			}
		}
	}
	c.segs = append(c.segs, segment{})
	s := &c.segs[len(c.segs)-1]
	psh := cand && pkt[iphLen+13]&tcpFlagPSH != 0
	if cand && !psh || len(pkt) > smallSegment { // room to grow only for a segment that may
		s.big = bigSegBufs.Get().(*[vnetHdrLen + maxIPPacket]byte)
		s.buf = s.big[:vnetHdrLen+len(pkt)]
	} else {
		s.sml = smallSegBufs.Get().(*[vnetHdrLen + smallSegment]byte)
		s.buf = s.sml[:vnetHdrLen+len(pkt)]
	}
	copy(s.buf[vnetHdrLen:], pkt)
	if isTCP {
		s.iphLen, s.tcphLen = iphLen, tcphLen
	}
	if cand {
		s.tcp, s.v6 = true, iphLen == 40
		s.gsoSize = len(pkt) - iphLen - tcphLen
		s.nextSeq = binary.BigEndian.Uint32(pkt[iphLen+4:]) + uint32(s.gsoSize)
		s.ended = psh
	}
}

// sameFlow compares addresses and ports (a and b have the same IP version and header length).
func sameFlow(a, b []byte, iphLen int) bool {
	src := 12
	if iphLen == 40 {
		src = 8
	}
	return string(a[src:iphLen+4]) == string(b[src:iphLen+4])
}

// merge appends pkt's payload to s if the GRO rules allow it.
func (c *coalescer) merge(s *segment, pkt []byte) bool {
	head := s.pkt()
	ip, th := s.iphLen, s.tcphLen
	payload := len(pkt) - ip - th
	if s.ended || s.big == nil || payload > s.gsoSize || len(head)+payload > maxIPPacket ||
		binary.BigEndian.Uint32(pkt[ip+4:]) != s.nextSeq {
		return false
	}
	if s.v6 {
		if string(head[:4]) != string(pkt[:4]) || head[7] != pkt[7] {
			return false // version, traffic class, flow label; hop limit
		}
	} else if head[1] != pkt[1] || head[6]>>5 != pkt[6]>>5 || head[8] != pkt[8] {
		return false // TOS; DF (and the reserved bit); TTL
	}
	// ACK number; then the window; then the options.
	if string(head[ip+8:ip+12]) != string(pkt[ip+8:ip+12]) || string(head[ip+14:ip+16]) != string(pkt[ip+14:ip+16]) ||
		string(head[ip+20:ip+th]) != string(pkt[ip+20:ip+th]) {
		return false
	}
	if !s.checked {
		if !transportChecksumValid(head, ip, protoTCP) {
			s.tcp = false // written as it came; the kernel drops it
			return false
		}
		s.checked = true
	}
	if !transportChecksumValid(pkt, ip, protoTCP) {
		return false
	}
	s.buf = append(s.buf, pkt[ip+th:]...) // within the big buffer's capacity (checked above)
	s.nextSeq += uint32(payload)
	s.merged++
	if pkt[ip+13]&tcpFlagPSH != 0 {
		s.buf[vnetHdrLen+ip+13] |= tcpFlagPSH
		s.ended = true
	}
	if payload < s.gsoSize {
		s.ended = true
	}
	return true
}

// finish fills in the virtio-net header and, for a merged segment, the IP lengths and the TCP pseudo-header
// checksum (the kernel completes it: NEEDS_CSUM), and returns the bytes to write.
func (s *segment) finish() []byte {
	if s.merged == 0 {
		vnetHdr{}.put(s.buf)
		return s.buf
	}
	pkt := s.pkt()
	h := vnetHdr{flags: vnetFlagNeedsCsum, hdrLen: uint16(s.iphLen + s.tcphLen), gsoSize: uint16(s.gsoSize),
		csumStart: uint16(s.iphLen), csumOffset: 16}
	if s.v6 {
		h.gsoType = gsoTCPv6
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
	} else {
		h.gsoType = gsoTCPv4
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], ^checksum.Checksum(pkt[:20], 0))
	}
	binary.BigEndian.PutUint16(pkt[s.iphLen+16:], pseudoHeaderSum(pkt, s.iphLen, protoTCP, len(pkt)-s.iphLen))
	h.put(s.buf)
	return s.buf
}

// reset releases the batch's buffers.
func (c *coalescer) reset() {
	for i := range c.segs {
		c.segs[i].release()
	}
	c.segs = c.segs[:0]
}

// pseudoHeaderSum is the one's-complement sum of the IPv4 or IPv6 pseudo-header of pkt's transport header
// (iphLen 20: IPv4; otherwise IPv6), not complemented.
func pseudoHeaderSum(pkt []byte, iphLen int, proto uint8, length int) uint16 {
	var sum uint16
	if pkt[0]>>4 == 4 {
		sum = checksum.Checksum(pkt[12:20], 0)
	} else {
		sum = checksum.Checksum(pkt[8:40], 0)
	}
	return checksum.Combine(checksum.Combine(sum, uint16(proto)), uint16(length))
}

// transportChecksumValid verifies the TCP or UDP checksum of pkt, whose transport header starts at iphLen.
func transportChecksumValid(pkt []byte, iphLen int, proto uint8) bool {
	return checksum.Checksum(pkt[iphLen:], pseudoHeaderSum(pkt, iphLen, proto, len(pkt)-iphLen)) == 0xffff
}

// maxSplitHeaders bounds the headers split copies in front of each packet (IPv6 with extension headers and TCP
// options stay well below it).
const maxSplitHeaders = 256

// split cuts what one device read returned, b (the virtio-net header, then the packet), into packets of at most
// the header's gsoSize payload, in place, computing the checksums the kernel left to us, and calls emit with each
// packet's bounds in b: b[off:end]. The vnetHdrLen bytes before off are free for the caller to use (the previous
// packet's tail, already emitted, or the header). emit must be done with the packet when it returns. split returns
// false, emitting nothing more, for a header it cannot honour.
func split(b []byte, emit func(off, end int)) bool {
	if len(b) <= vnetHdrLen {
		return false
	}
	h := getVnetHdr(b)
	pkt := b[vnetHdrLen:]
	if h.gsoType == gsoNone {
		if h.flags&vnetFlagNeedsCsum != 0 {
			at := int(h.csumStart) + int(h.csumOffset)
			if at+2 > len(pkt) {
				return false
			}
			initial := binary.BigEndian.Uint16(pkt[at:])
			pkt[at], pkt[at+1] = 0, 0
			binary.BigEndian.PutUint16(pkt[at:], ^checksum.Checksum(pkt[h.csumStart:], initial))
		}
		emit(vnetHdrLen, len(b))
		return true
	}
	v6 := pkt[0]>>4 == 6
	iphLen, gso := int(h.csumStart), int(h.gsoSize)
	var hdrLen int
	var proto uint8
	switch {
	case h.gsoType == gsoTCPv4 && !v6 || h.gsoType == gsoTCPv6 && v6:
		if len(pkt) < iphLen+20 || pkt[iphLen+12]>>4 < 5 {
			return false
		}
		proto, hdrLen = protoTCP, iphLen+int(pkt[iphLen+12]>>4)*4
	case h.gsoType == gsoUDPL4:
		proto, hdrLen = protoUDP, iphLen+8
	default:
		return false
	}
	if gso == 0 || hdrLen > maxSplitHeaders || hdrLen >= len(pkt) || iphLen < 20 || v6 && iphLen < 40 {
		return false
	}
	var tmpl [maxSplitHeaders]byte
	copy(tmpl[:], pkt[:hdrLen])
	var seq0 uint32
	if proto == protoTCP {
		seq0 = binary.BigEndian.Uint32(tmpl[iphLen+4:])
	}
	id0 := binary.BigEndian.Uint16(tmpl[4:])
	for i, off := 0, hdrLen; off < len(pkt); i, off = i+1, off+gso {
		n := min(gso, len(pkt)-off)
		seg := pkt[off-hdrLen : off+n]
		if i > 0 {
			copy(seg, tmpl[:hdrLen]) // over the previous packet's tail, already emitted
		}
		total := hdrLen + n
		if v6 {
			binary.BigEndian.PutUint16(seg[4:], uint16(total-40))
		} else {
			binary.BigEndian.PutUint16(seg[2:], uint16(total))
			binary.BigEndian.PutUint16(seg[4:], id0+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], ^checksum.Checksum(seg[:iphLen], 0))
		}
		csumAt := iphLen + 6
		if proto == protoTCP {
			binary.BigEndian.PutUint32(seg[iphLen+4:], seq0+uint32(i*gso))
			flags := tmpl[iphLen+13]
			if off+n < len(pkt) {
				flags &^= tcpFlagFIN | tcpFlagPSH // as the kernel's tcp_gso_segment: only the last keeps them
			}
			if i > 0 {
				flags &^= tcpFlagCWR
			}
			seg[iphLen+13] = flags
			csumAt = iphLen + 16
		} else {
			binary.BigEndian.PutUint16(seg[iphLen+4:], uint16(total-iphLen))
		}
		seg[csumAt], seg[csumAt+1] = 0, 0
		sum := ^checksum.Checksum(seg[iphLen:], pseudoHeaderSum(seg, iphLen, proto, total-iphLen))
		if sum == 0 && proto == protoUDP {
			sum = 0xffff // 0 means "no checksum" in UDP over IPv4, and is invalid over IPv6
		}
		binary.BigEndian.PutUint16(seg[csumAt:], sum)
		emit(vnetHdrLen+off-hdrLen, vnetHdrLen+off+n)
	}
	return true
}

// mayMerge reports whether pkt could be merged with a later packet: a TCP segment with data and only ACK (or
// ACK|PSH) set, while merging is on.
func (c *coalescer) mayMerge(pkt []byte) bool {
	if !c.gro {
		return false
	}
	iphLen, tcphLen, ok := tcpHeaders(pkt)
	return ok && mergeable(pkt, iphLen, tcphLen) && pkt[iphLen+13]&tcpFlagPSH == 0
}
