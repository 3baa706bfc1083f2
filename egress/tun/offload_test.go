package tun

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// tcpSeg describes a crafted TCP packet.
type tcpSeg struct {
	src, dst   netip.AddrPort
	seq, ack   uint32
	flags      uint8
	window     uint16
	opts       []byte // a multiple of 4 bytes
	payload    int    // bytes of payload (a pattern derived from seq)
	id         uint16 // IPv4 identification
	ttl, tos   uint8
	badSum     bool // corrupt the TCP checksum
	ipv4Opts   bool // add 4 bytes of IPv4 options (NOPs)
	fragmented bool // set IPv4 MF
}

var (
	cli4 = netip.MustParseAddrPort("10.250.77.9:40000")
	srv4 = netip.MustParseAddrPort("10.77.0.1:5201")
	cli6 = netip.MustParseAddrPort("[fd00:77::9]:40000")
	srv6 = netip.MustParseAddrPort("[fd00:77::1]:5201")
)

// build returns the packet with valid checksums (unless badSum).
func (s tcpSeg) build() []byte {
	if s.flags == 0 {
		s.flags = tcpFlagACK
	}
	if s.window == 0 {
		s.window = 512
	}
	if s.ttl == 0 {
		s.ttl = 64
	}
	iph := 40
	if s.src.Addr().Is4() {
		iph = 20
		if s.ipv4Opts {
			iph = 24
		}
	}
	th := 20 + len(s.opts)
	pkt := make([]byte, iph+th+s.payload)
	if iph == 40 {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		pkt[6], pkt[7] = protoTCP, s.ttl
		a, b := s.src.Addr().As16(), s.dst.Addr().As16()
		copy(pkt[8:], a[:])
		copy(pkt[24:], b[:])
	} else {
		pkt[0] = 0x40 | byte(iph/4)
		pkt[1] = s.tos
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[4:], s.id)
		pkt[6] = 0x40 // DF
		if s.fragmented {
			pkt[6] |= 0x20
		}
		pkt[8], pkt[9] = s.ttl, protoTCP
		a, b := s.src.Addr().As4(), s.dst.Addr().As4()
		copy(pkt[12:], a[:])
		copy(pkt[16:], b[:])
		for i := 20; i < iph; i++ {
			pkt[i] = 1
		}
		binary.BigEndian.PutUint16(pkt[10:], ^checksum.Checksum(pkt[:iph], 0))
	}
	t := pkt[iph:]
	binary.BigEndian.PutUint16(t[0:], s.src.Port())
	binary.BigEndian.PutUint16(t[2:], s.dst.Port())
	binary.BigEndian.PutUint32(t[4:], s.seq)
	binary.BigEndian.PutUint32(t[8:], s.ack)
	t[12] = byte(th/4) << 4
	t[13] = s.flags
	binary.BigEndian.PutUint16(t[14:], s.window)
	copy(t[20:], s.opts)
	for i := range s.payload {
		t[th+i] = byte(s.seq + uint32(i))
	}
	binary.BigEndian.PutUint16(t[16:], ^checksum.Checksum(t, pseudoHeaderSum(pkt, iph, protoTCP, len(t))))
	if s.badSum {
		t[16] ^= 0x55
	}
	return pkt
}

// stream returns n contiguous segments of mss bytes of one flow, IDs counting up.
func stream(src, dst netip.AddrPort, n, mss int) []tcpSeg {
	var segs []tcpSeg
	for i := range n {
		segs = append(segs, tcpSeg{src: src, dst: dst, seq: 1000 + uint32(i*mss), ack: 77, flags: tcpFlagACK, payload: mss, id: uint16(100 + i),
			opts: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}})
	}
	return segs
}

// batch adds the packets to a merging coalescer and returns it.
func batch(t testing.TB, gro bool, segs []tcpSeg) *coalescer {
	t.Helper()
	c := &coalescer{gro: gro}
	t.Cleanup(c.reset)
	for _, s := range segs {
		c.add(s.build())
	}
	return c
}

// counts returns how many packets each segment of c holds.
func counts(c *coalescer) []int {
	var n []int
	for _, s := range c.segs {
		n = append(n, s.merged+1)
	}
	return n
}

// TestCoalesceRules: which packets merge (contiguous data of one flow, IPv4 and IPv6) and which do not.
func TestCoalesceRules(t *testing.T) {
	with := func(segs []tcpSeg, i int, f func(*tcpSeg)) []tcpSeg {
		segs = append([]tcpSeg(nil), segs...)
		f(&segs[i])
		return segs
	}
	s4, s6 := stream(cli4, srv4, 4, 1400), stream(cli6, srv6, 4, 1380)
	other := stream(netip.AddrPortFrom(cli4.Addr(), 40001), srv4, 2, 1400)
	for _, tc := range []struct {
		name string
		gro  bool
		segs []tcpSeg
		want []int
	}{
		{"ipv4 contiguous", true, s4, []int{4}},
		{"ipv6 contiguous", true, s6, []int{4}},
		{"no offloads", false, s4, []int{1, 1, 1, 1}},
		{"sequence gap", true, with(s4, 2, func(s *tcpSeg) { s.seq += 1 }), []int{2, 1, 1}},
		{"psh ends a segment", true, with(s4, 1, func(s *tcpSeg) { s.flags |= tcpFlagPSH }), []int{2, 2}},
		{"psh first", true, with(s4, 0, func(s *tcpSeg) { s.flags |= tcpFlagPSH }), []int{1, 3}},
		{"shorter packet ends a segment", true, with(with(with(s4, 1, func(s *tcpSeg) { s.payload = 700 }), 2,
			func(s *tcpSeg) { s.seq -= 700 }), 3, func(s *tcpSeg) { s.seq -= 700 }), []int{2, 2}},
		{"longer packet after the first", true, with(stream(cli4, srv4, 2, 1000), 1, func(s *tcpSeg) { s.payload = 1400 }), []int{1, 1}},
		{"other options", true, with(s4, 2, func(s *tcpSeg) { s.opts = []byte{1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 2} }), []int{2, 1, 1}},
		{"other ack", true, with(s4, 1, func(s *tcpSeg) { s.ack++ }), []int{1, 1, 2}},
		{"other window", true, with(s4, 3, func(s *tcpSeg) { s.window++ }), []int{3, 1}},
		{"other ttl", true, with(s4, 3, func(s *tcpSeg) { s.ttl-- }), []int{3, 1}},
		{"other tos", true, with(s4, 3, func(s *tcpSeg) { s.tos = 1 }), []int{3, 1}},
		{"other ipv6 hop limit", true, with(s6, 3, func(s *tcpSeg) { s.ttl-- }), []int{3, 1}},
		{"fin", true, with(s4, 3, func(s *tcpSeg) { s.flags |= tcpFlagFIN }), []int{3, 1}},
		{"syn", true, with(s4, 0, func(s *tcpSeg) { s.flags = 0x02 }), []int{1, 3}},
		{"cwr", true, with(s4, 2, func(s *tcpSeg) { s.flags |= tcpFlagCWR }), []int{2, 1, 1}},
		{"ipv4 options", true, with(with(s4, 0, func(s *tcpSeg) { s.ipv4Opts = true }), 1, func(s *tcpSeg) { s.ipv4Opts = true }), []int{1, 1, 2}},
		{"fragment", true, with(s4, 1, func(s *tcpSeg) { s.fragmented = true }), []int{1, 1, 2}},
		{"bad checksum", true, with(s4, 2, func(s *tcpSeg) { s.badSum = true }), []int{2, 1, 1}},
		{"bad checksum first", true, with(s4, 0, func(s *tcpSeg) { s.badSum = true }), []int{1, 3}},
		{"interleaved flows", true, []tcpSeg{s4[0], other[0], s4[1], other[1], s4[2]}, []int{3, 2}},
		{"ack of the flow between", true, []tcpSeg{s4[0], {src: cli4, dst: srv4, seq: s4[1].seq, ack: 77}, s4[1], s4[2]}, []int{1, 1, 2}},
		{"ipv4 and ipv6", true, []tcpSeg{s4[0], s6[0], s4[1], s6[1]}, []int{2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := counts(batch(t, tc.gro, tc.segs)); !slices.Equal(got, tc.want) {
				t.Errorf("packets per segment %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCoalesceLimit: a merged segment stays within an IP packet's 64 KiB.
func TestCoalesceLimit(t *testing.T) {
	c := batch(t, true, stream(cli4, srv4, 60, 1400))
	if got := counts(c); len(got) != 2 || got[0] != 46 || got[1] != 14 {
		t.Errorf("packets per segment %v, want [46 14]", got)
	}
	for _, s := range c.segs {
		if len(s.pkt()) > maxIPPacket {
			t.Errorf("segment of %d bytes", len(s.pkt()))
		}
	}
}

// TestCoalesceRoundTrip: what finish writes is what the kernel would cut again into the very packets that came
// in (split does it as the kernel does), for IPv4 and IPv6, with PSH on the last; the header says so.
func TestCoalesceRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segs    []tcpSeg
		gsoType uint8
	}{
		{"ipv4", stream(cli4, srv4, 8, 1400), gsoTCPv4},
		{"ipv6", stream(cli6, srv6, 8, 1380), gsoTCPv6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.segs[7].flags |= tcpFlagPSH
			tc.segs[7].payload = 300
			var want [][]byte
			for _, s := range tc.segs {
				want = append(want, s.build())
			}
			c := batch(t, true, tc.segs)
			if len(c.segs) != 1 {
				t.Fatalf("%d segments, want 1", len(c.segs))
			}
			b := c.segs[0].finish()
			h := getVnetHdr(b)
			pkt := b[vnetHdrLen:]
			iph := c.segs[0].iphLen
			if h.gsoType != tc.gsoType || h.flags != vnetFlagNeedsCsum || int(h.gsoSize) != tc.segs[0].payload ||
				int(h.hdrLen) != iph+32 || int(h.csumStart) != iph || h.csumOffset != 16 {
				t.Errorf("header %+v", h)
			}
			if iph == 20 {
				if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || checksum.Checksum(pkt[:20], 0) != 0xffff {
					t.Errorf("IPv4 header: length %d (packet %d), checksum not valid", binary.BigEndian.Uint16(pkt[2:]), len(pkt))
				}
			} else if int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt)-40 {
				t.Errorf("IPv6 payload length %d, packet %d", binary.BigEndian.Uint16(pkt[4:]), len(pkt))
			}
			if got, want := binary.BigEndian.Uint16(pkt[iph+16:]), pseudoHeaderSum(pkt, iph, protoTCP, len(pkt)-iph); got != want {
				t.Errorf("TCP checksum field %#x, want the pseudo-header sum %#x", got, want)
			}
			if pkt[iph+13] != tcpFlagACK|tcpFlagPSH {
				t.Errorf("flags %#x, want ACK|PSH", pkt[iph+13])
			}
			var got [][]byte
			if !split(b, func(off, end int) { got = append(got, bytes.Clone(b[off:end])) }) {
				t.Fatal("split refused the header")
			}
			if len(got) != len(want) {
				t.Fatalf("split into %d packets, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("packet %d differs after the round trip:\n got %x\nwant %x", i, got[i][:60], want[i][:60])
				}
			}
		})
	}
}

// TestCoalesceSingle: a packet that merged with nothing goes out untouched behind an empty header.
func TestCoalesceSingle(t *testing.T) {
	s := stream(cli4, srv4, 1, 1400)[0]
	c := batch(t, true, []tcpSeg{s})
	b := c.segs[0].finish()
	if getVnetHdr(b) != (vnetHdr{}) || !bytes.Equal(b[vnetHdrLen:], s.build()) {
		t.Errorf("single packet altered: header %+v", getVnetHdr(b))
	}
}

// TestSplit: what the device hands over: a TSO burst (IPv4 and IPv6), a UDP GSO burst, one packet whose checksum
// the kernel left to us, and headers split refuses.
func TestSplit(t *testing.T) {
	t.Run("needs checksum", func(t *testing.T) {
		want := stream(cli4, srv4, 1, 500)[0].build()
		b := make([]byte, vnetHdrLen+len(want))
		copy(b[vnetHdrLen:], want)
		pkt := b[vnetHdrLen:]
		binary.BigEndian.PutUint16(pkt[36:], pseudoHeaderSum(pkt, 20, protoTCP, len(pkt)-20))
		vnetHdr{flags: vnetFlagNeedsCsum, csumStart: 20, csumOffset: 16}.put(b)
		var got []byte
		split(b, func(off, end int) { got = bytes.Clone(b[off:end]) })
		if !bytes.Equal(got, want) {
			t.Errorf("checksum not completed: %x, want %x", got[36:38], want[36:38])
		}
	})
	t.Run("udp", func(t *testing.T) {
		// Three datagrams of 1000 bytes and one of 200 in one UDP GSO buffer.
		const gso, last = 1000, 200
		total := 28 + 3*gso + last
		b := make([]byte, vnetHdrLen+total)
		pkt := b[vnetHdrLen:]
		pkt[0], pkt[6], pkt[8], pkt[9] = 0x45, 0x40, 64, protoUDP
		binary.BigEndian.PutUint16(pkt[2:], uint16(total))
		copy(pkt[12:], []byte{10, 250, 77, 9, 10, 77, 0, 1})
		binary.BigEndian.PutUint16(pkt[20:], 5000)
		binary.BigEndian.PutUint16(pkt[22:], 53)
		for i := 28; i < total; i++ {
			pkt[i] = byte(i)
		}
		vnetHdr{flags: vnetFlagNeedsCsum, gsoType: gsoUDPL4, hdrLen: 28, gsoSize: gso, csumStart: 20, csumOffset: 6}.put(b)
		var sizes []int
		ok := split(b, func(off, end int) {
			p := b[off:end]
			sizes = append(sizes, len(p))
			if int(binary.BigEndian.Uint16(p[2:])) != len(p) || checksum.Checksum(p[:20], 0) != 0xffff ||
				int(binary.BigEndian.Uint16(p[24:])) != len(p)-20 || !transportChecksumValid(p, 20, protoUDP) {
				t.Errorf("datagram %d: lengths or checksums wrong", len(sizes))
			}
		})
		if !ok || !slices.Equal(sizes, []int{1028, 1028, 1028, 228}) {
			t.Errorf("split %v into %v", ok, sizes)
		}
	})
	t.Run("refused", func(t *testing.T) {
		b := make([]byte, vnetHdrLen+100)
		b[vnetHdrLen] = 0x45
		for _, h := range []vnetHdr{
			{gsoType: gsoTCPv6, gsoSize: 10, csumStart: 20, flags: vnetFlagNeedsCsum}, // TCPv6 on an IPv4 packet
			{gsoType: gsoTCPv4, gsoSize: 0, csumStart: 20, flags: vnetFlagNeedsCsum},  // no size
			{gsoType: 3, gsoSize: 10, csumStart: 20},                                  // UDP fragmentation offload
			{flags: vnetFlagNeedsCsum, csumStart: 90, csumOffset: 16},                 // checksum beyond the packet
		} {
			h.put(b)
			if split(b, func(int, int) { t.Errorf("%+v: emitted", h) }) {
				t.Errorf("%+v: accepted", h)
			}
		}
		if split(b[:vnetHdrLen], func(int, int) {}) {
			t.Error("accepted a bare header")
		}
	})
}

// TestOffloadAllocs: merging a burst, writing it out and cutting a TSO burst allocate nothing in steady state.
func TestOffloadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled buffers at random")
	}
	var pkts [][]byte
	for _, s := range stream(cli4, srv4, 40, 1400) {
		pkts = append(pkts, s.build())
	}
	c := &coalescer{gro: true}
	run := func() {
		for _, p := range pkts {
			if c.full() {
				c.reset()
			}
			c.add(p)
		}
		for i := range c.segs {
			c.segs[i].finish()
		}
		c.reset()
	}
	run()
	if a := testing.AllocsPerRun(100, run); a != 0 {
		t.Errorf("merging allocates %.1f times per burst, want 0", a)
	}
	c.gro = true
	for _, p := range pkts {
		c.add(p)
	}
	burst := bytes.Clone(c.segs[0].finish())
	c.reset()
	b := make([]byte, len(burst))
	n := 0
	emit := func(off, end int) { n++ }
	if a := testing.AllocsPerRun(100, func() { copy(b, burst); split(b, emit) }); a != 0 || n == 0 {
		t.Errorf("split allocates %.1f times per burst (%d packets), want 0", a, n)
	}
}

// FuzzCoalesce: whatever a client sends (two packets, each twice, interleaved), merging never panics, never
// builds a packet over 64 KiB, and what it merged cuts back (split, as the kernel would) into packets carrying the
// same TCP payload bytes in order, each with valid checksums.
func FuzzCoalesce(f *testing.F) {
	s := stream(cli4, srv4, 2, 600)
	f.Add(s[0].build(), s[1].build())
	s6 := stream(cli6, srv6, 2, 600)
	f.Add(s6[0].build(), s6[1].build())
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if len(a) > maxPacket || len(b) > maxPacket {
			return
		}
		c := &coalescer{gro: true}
		defer c.reset()
		for _, p := range [][]byte{a, b, a, b} {
			c.add(p)
		}
		for i := range c.segs {
			seg := &c.segs[i]
			merged, iph, th := seg.merged, seg.iphLen, seg.tcphLen
			var want []byte // the payloads of the packets merged into this segment, in order
			if merged > 0 {
				want = append(want, seg.pkt()[iph+th:]...)
			}
			buf := seg.finish()
			if len(buf) > vnetHdrLen+maxIPPacket {
				t.Fatalf("segment of %d bytes", len(buf))
			}
			if merged == 0 {
				continue
			}
			var got []byte
			n := 0
			b2 := bytes.Clone(buf)
			ok := split(b2, func(off, end int) {
				p := b2[off:end]
				n++
				if iph == 20 && checksum.Checksum(p[:20], 0) != 0xffff || !transportChecksumValid(p, iph, protoTCP) {
					t.Fatalf("packet %d of a merged segment: checksums not valid", n)
				}
				got = append(got, p[iph+th:]...)
			})
			if !ok || n != merged+1 || !bytes.Equal(got, want) {
				t.Fatalf("merged %d packets, cut into %d (ok %v); payload equal %v", merged+1, n, ok, bytes.Equal(got, want))
			}
		}
	})
}

// FuzzSplit: whatever a device read returns, split never panics and emits only packets inside the buffer, with
// the header room in front.
func FuzzSplit(f *testing.F) {
	c := batch(f, true, stream(cli4, srv4, 4, 500))
	f.Add(bytes.Clone(c.segs[0].finish()))
	f.Fuzz(func(t *testing.T, b []byte) {
		split(b, func(off, end int) {
			if off < vnetHdrLen || end > len(b) || off > end {
				t.Fatalf("emitted [%d,%d) of %d bytes", off, end, len(b))
			}
		})
	})
}
