package netstack

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
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
