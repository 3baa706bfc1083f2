package dtls

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"net"
	"testing"
	"time"

	"ocgate/protocol/datapath"
	"ocgate/protocol/dtlsrec"
)

// The DTLS fast path's send side allocates nothing per record: sealing in the packets' buffers, holding them in
// the tunnel's batch and sending it with sendmmsg.
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
	b, err := newBatch(f)
	if err != nil {
		t.Fatal(err)
	}
	pkt := bytes.Repeat([]byte{0}, 1401)
	if n := testing.AllocsPerRun(100, func() {
		for range 8 {
			p := datapath.GetBuffer(len(pkt) - 1) // pkt is the type byte and the packet
			copy(p.B[datapath.Headroom-1:], pkt)
			if err := b.Add(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 && !raceEnabled {
		t.Errorf("8 records sealed and sent: %v allocations", n)
	}
	buf := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sink.Read(buf); err != nil || n != dtlsrec.HeaderLen+8+len(pkt)+16 {
		t.Fatalf("record on the wire: %d bytes, %v", n, err)
	}
}
