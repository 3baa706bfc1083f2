package protocol

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"net"
	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
	"testing"
	"time"
)

// The CSTP frame path allocates nothing per packet in steady state: frames come from pools (reading frames: see
// package cstp's tests).
func TestCSTPFramePathAllocs(t *testing.T) {
	pkt := bytes.Repeat([]byte{0x45}, 1400)
	if n := testing.AllocsPerRun(1000, func() { newFrame(cstp.Data, pkt).release() }); n != 0 {
		t.Errorf("newFrame/release: %v allocations per packet", n)
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

// The DTLS fast path's send side allocates nothing per record: sealing into the tunnel's batch and sending it
// with sendmmsg.
func TestDTLSBatchAllocs(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	block, _ := aes.NewCipher(make([]byte, 16))
	gcm, _ := cipher.NewGCM(block)
	f := &dtlsrec.Conn{Layer: dtlsrec.NewForTest(gcm, make([]byte, 4), 1), PC: pc, Peer: sink.LocalAddr().(*net.UDPAddr).AddrPort()}
	b, err := newDTLSBatch(f)
	if err != nil {
		t.Fatal(err)
	}
	pkt := bytes.Repeat([]byte{0}, 1401)
	if n := testing.AllocsPerRun(100, func() {
		for range 8 {
			if err := b.add(pkt); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.flush(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("8 records sealed and sent: %v allocations", n)
	}
	buf := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sink.Read(buf); err != nil || n != dtlsrec.HeaderLen+8+len(pkt)+16 {
		t.Fatalf("record on the wire: %d bytes, %v", n, err)
	}
}
