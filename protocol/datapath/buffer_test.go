package datapath

import (
	"bytes"
	"testing"
)

// DeliverBuf hands the Buffer over to a session that takes Buffers, and gives a copy to one that does not; a
// Buffer has its room on both sides, and taking one and giving it back allocates nothing.
func TestDeliverBuf(t *testing.T) {
	pkt := bytes.Repeat([]byte{0x45}, 1400)
	for _, tc := range []struct {
		name    string
		buffers bool
	}{{"DeliverBuffer", true}, {"Deliver", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			s := &Session{Deliver: func(p []byte) { got = bytes.Clone(p) }}
			if tc.buffers {
				s.DeliverBuffer = func(b *Buffer) {
					if len(b.B) < Headroom+b.N+Tailroom {
						t.Errorf("buffer of %d bytes for a %d-byte packet", len(b.B), b.N)
					}
					got = bytes.Clone(b.Packet())
					b.Release()
				}
			}
			b := GetBuffer(len(pkt))
			copy(b.Packet(), pkt)
			s.DeliverBuf(b)
			if !bytes.Equal(got, pkt) {
				t.Fatalf("delivered %d bytes, want %d", len(got), len(pkt))
			}
		})
	}
	for _, n := range []int{0, 1400, 2048, 2049, MaxPacket} {
		if b := GetBuffer(n); b == nil || b.N != n || len(b.B) < Headroom+n+Tailroom {
			t.Fatalf("GetBuffer(%d): %+v", n, b)
		} else {
			b.Release()
		}
	}
	if GetBuffer(MaxPacket+1) != nil {
		t.Fatal("GetBuffer(MaxPacket+1) is not nil")
	}
	if n := testing.AllocsPerRun(1000, func() { GetBuffer(1400).Release() }); n != 0 && !raceEnabled {
		t.Errorf("GetBuffer/Release: %v allocations", n)
	}
}
