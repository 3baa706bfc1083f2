package protocol

import (
	"bytes"
	"testing"

	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
)

// The CSTP frame path allocates nothing per packet in steady state: frames come from pools (reading frames: see
// package cstp's tests).
func TestCSTPFramePathAllocs(t *testing.T) {
	pkt := bytes.Repeat([]byte{0x45}, 1400)
	if n := testing.AllocsPerRun(1000, func() { newFrame(cstp.Data, pkt).release() }); n != 0 {
		t.Errorf("newFrame/release: %v allocations per packet", n)
	}
	// A packet the datapath hands over in a buffer is framed in place and queued: no copy, no allocation.
	tun := &tunnel{}
	tun.dq.init()
	var fs [1]*frame
	if n := testing.AllocsPerRun(1000, func() {
		b := datapath.GetBuffer(len(pkt))
		copy(b.Packet(), pkt)
		if !tun.queueData(b, false) {
			t.Fatal("queue full")
		}
		<-tun.dq.wake
		if tun.dq.popN(fs[:]) != 1 {
			t.Fatal("nothing queued")
		}
		f := fs[0]
		if typ, n, err := cstp.ParseHeader(f.bytes()); err != nil || typ != cstp.Data || n != len(pkt) {
			t.Fatalf("frame header: type %d, %d bytes, %v", typ, n, err)
		}
		f.release()
	}); n != 0 && !raceEnabled {
		t.Errorf("queueData: %v allocations per packet", n)
	}
	tb := newTokenBucket(1 << 30)
	if n := testing.AllocsPerRun(1000, func() { tb.allow(1400) }); n != 0 {
		t.Errorf("token bucket: %v allocations per packet", n)
	}
}

func BenchmarkCSTPFrame(b *testing.B) {
	pkt := bytes.Repeat([]byte{0x45}, 1400)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		newFrame(cstp.Data, pkt).release()
	}
}
