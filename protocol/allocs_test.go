package protocol

import (
	"bytes"
	"testing"
)

// The CSTP frame path allocates nothing per packet in steady state: frames come from pools, reads go into the
// tunnel's own buffer.
func TestCSTPFramePathAllocs(t *testing.T) {
	pkt := bytes.Repeat([]byte{0x45}, 1400)
	if n := testing.AllocsPerRun(1000, func() { newFrame(pktData, pkt).release() }); n != 0 {
		t.Errorf("newFrame/release: %v allocations per packet", n)
	}
	f := newFrame(pktData, pkt)
	wire := bytes.Clone(f.b[:f.n])
	f.release()
	buf := make([]byte, cstpHeaderLen+maxCSTPPayload)
	r := bytes.NewReader(wire)
	if n := testing.AllocsPerRun(1000, func() {
		r.Reset(wire)
		if _, _, err := readCSTPFrame(r, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("readCSTPFrame: %v allocations per packet", n)
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
		newFrame(pktData, pkt).release()
	}
}
