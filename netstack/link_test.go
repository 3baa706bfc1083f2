package netstack

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	tcpipchecksum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"ocgate/protocol/datapath"
)

// A packet the stack sends reaches its session's DeliverBuffer in one copy — its header and payload views joined in
// a datapath.Buffer with the room for the tunnel's framing — and the way there allocates nothing.
func TestLinkDeliversBuffers(t *testing.T) {
	s := newLimitStack(t, nil)
	var got []byte
	var delivered int
	sess := &datapath.Session{ID: 9, User: "b", Addrs: []netip.Addr{clientIP}, MTU: 1500,
		Deliver: func([]byte) { t.Error("Deliver called although the session takes buffers") },
		DeliverBuffer: func(b *datapath.Buffer) {
			delivered++
			if got == nil {
				got = bytes.Clone(b.Packet())
			}
			b.Release()
		}}
	p, err := s.Attach(sess)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	hdr := make([]byte, 20)
	hdr[0] = 0x45
	copy(hdr[16:20], clientIP.AsSlice())
	payload := bytes.Repeat([]byte{0xab}, 1380)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 20, Payload: buffer.MakeWithData(payload)})
	defer pkt.DecRef()
	copy(pkt.NetworkHeader().Push(20), hdr)
	var pkts stack.PacketBufferList
	pkts.PushBack(pkt)

	if n, _ := s.link.WritePackets(pkts); n != 1 || delivered != 1 {
		t.Fatalf("WritePackets: %d written, %d delivered", n, delivered)
	}
	if want := append(bytes.Clone(hdr), payload...); !bytes.Equal(got, want) {
		t.Fatalf("delivered %d bytes %x…, want %d bytes %x…", len(got), got[:24], len(want), want[:24])
	}
	if n := testing.AllocsPerRun(1000, func() { s.link.WritePackets(pkts) }); n != 0 && !raceEnabled {
		t.Errorf("link to session: %v allocations per packet", n)
	}
}

// With gVisor's software GSO on the link, the TCP sender builds large segments, but what reaches a session is
// cut to the MTU: a bulk transfer towards the client arrives intact in packets of at most 1500 bytes.
func TestGSOPacketsFitMTU(t *testing.T) {
	s := newLimitStack(t, nil)
	var mu sync.Mutex
	longest := 0
	c := attachClient(t, s, clientIP, func(sess *datapath.Session) {
		deliver := sess.Deliver
		sess.Deliver = func(pkt []byte) {
			mu.Lock()
			longest = max(longest, len(pkt))
			mu.Unlock()
			deliver(pkt)
		}
	})
	echoRoundTrip(t, c, 1<<20)
	mu.Lock()
	defer mu.Unlock()
	if longest > 1500 || longest < 1400 {
		t.Fatalf("longest packet towards the client: %d bytes, want full-sized packets of at most the MTU", longest)
	}
}

// Packets sent in bursts are coalesced by GRO: a bulk upload arrives intact, and the stack's NIC sees fewer
// (larger) packets than the client sent.
func TestBurstCoalesced(t *testing.T) {
	s := newLimitStack(t, nil)
	c := attachClientSending(t, s, clientIP, nil, true)
	echoRoundTrip(t, c, 4<<20)
	in := s.Stats().PacketsIn
	nic := s.stack.NICInfo()[nicID].Stats.Rx.Packets.Value()
	if nic >= in {
		t.Fatalf("the NIC received %d packets of the %d sent in bursts: nothing was coalesced", nic, in)
	}
	t.Logf("%d packets in, %d into the stack", in, nic)
}

// Port.Send verifies the checksums gVisor no longer does (receive checksum offload, for GRO).
func TestChecksumsVerified(t *testing.T) {
	ip4 := func(proto byte, payload []byte) []byte {
		p := make([]byte, 20+len(payload))
		h := header.IPv4(p)
		h.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: proto,
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
		h.SetChecksum(^h.CalculateChecksum())
		copy(p[20:], payload)
		return p
	}
	ip6 := func(proto byte, payload []byte) []byte {
		p := make([]byte, 40+len(payload))
		header.IPv6(p).Encode(&header.IPv6Fields{PayloadLength: uint16(len(payload)), TransportProtocol: tcpip.TransportProtocolNumber(proto),
			HopLimit: 64, SrcAddr: tcpip.AddrFrom16([16]byte{15: 1}), DstAddr: tcpip.AddrFrom16([16]byte{15: 2})})
		copy(p[40:], payload)
		return p
	}
	// seal writes the transport checksum of the packet's TCP or UDP segment.
	seal := func(p []byte) []byte {
		var src, dst tcpip.Address
		var seg []byte
		var proto tcpip.TransportProtocolNumber
		if p[0]>>4 == 4 {
			h := header.IPv4(p)
			src, dst, seg, proto = h.SourceAddress(), h.DestinationAddress(), p[20:], h.TransportProtocol()
		} else {
			h := header.IPv6(p)
			src, dst, seg, proto = h.SourceAddress(), h.DestinationAddress(), p[40:], tcpip.TransportProtocolNumber(h.NextHeader()) // the test's packets have no extension headers
		}
		off := 16 // TCP
		if proto == header.UDPProtocolNumber {
			off = 6
		}
		seg[off], seg[off+1] = 0, 0
		xsum := header.PseudoHeaderChecksum(proto, src, dst, uint16(len(seg)))
		xsum = ^tcpipchecksum.Checksum(seg, xsum)
		seg[off], seg[off+1] = byte(xsum>>8), byte(xsum)
		return p
	}
	tcpSeg := make([]byte, 20+100)
	tcpSeg[12] = 5 << 4
	udpSeg := make([]byte, 8+100)
	udpSeg[5] = byte(len(udpSeg))
	flip := func(i int, p []byte) []byte { p[i] ^= 0x10; return p }
	for _, tc := range []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"IPv4 TCP", seal(ip4(6, tcpSeg)), true},
		{"IPv4 TCP payload changed", flip(100, seal(ip4(6, tcpSeg))), false},
		{"IPv4 header changed", flip(8, seal(ip4(6, tcpSeg))), false},
		{"IPv4 UDP", seal(ip4(17, udpSeg)), true},
		{"IPv4 UDP payload changed", flip(100, seal(ip4(17, udpSeg))), false},
		{"IPv4 UDP without checksum", ip4(17, udpSeg), true},
		{"IPv6 TCP", seal(ip6(6, tcpSeg)), true},
		{"IPv6 TCP payload changed", flip(100, seal(ip6(6, tcpSeg))), false},
		{"IPv6 UDP", seal(ip6(17, udpSeg)), true},
		{"IPv6 UDP payload changed", flip(100, seal(ip6(17, udpSeg))), false},
		{"IPv4 ICMP (gVisor verifies it)", ip4(1, make([]byte, 8)), true},
		{"IPv4 flags changed", flip(6, seal(ip4(6, tcpSeg))), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checksumsValid(tc.pkt); got != tc.ok {
				t.Fatalf("checksumsValid = %v, want %v", got, tc.ok)
			}
			if n := testing.AllocsPerRun(100, func() { checksumsValid(tc.pkt) }); n != 0 {
				t.Fatalf("%v allocations per packet", n)
			}
		})
	}
}
