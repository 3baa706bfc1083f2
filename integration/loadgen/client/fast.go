package client

// The client's own DTLS record layer for application data after pion's handshake: package dtlsrec, the one the
// server's fast path uses (AES-GCM, ChaCha20-Poly1305; one AEAD call per record, replay window included).

import (
	"net"
	"net/netip"
	"sync"

	"github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
)

const (
	dtlsRecordHeaderLen = dtlsrec.HeaderLen
	recordAppData       = dtlsrec.AppData
)

type dtlsFast struct {
	*dtlsrec.Layer
	pc   *net.UDPConn
	peer netip.AddrPort
}

func newDTLSFast(conn *dtls.Conn, pc *net.UDPConn, peer netip.AddrPort) (*dtlsFast, error) {
	l, err := dtlsrec.New(conn)
	if err != nil {
		return nil, err
	}
	return &dtlsFast{Layer: l, pc: pc, peer: peer}, nil
}

type sealScratch struct {
	rec []byte
	sc  dtlsrec.Scratch
}

var sealBufs = sync.Pool{New: func() any {
	return &sealScratch{rec: make([]byte, 0, dtlsRecordHeaderLen+8+1+maxPayload+64)}
}}

// write seals plaintext (type || payload) into one application-data record and sends it.
func (f *dtlsFast) write(plaintext []byte) error {
	s := sealBufs.Get().(*sealScratch)
	defer sealBufs.Put(s)
	rec := f.Seal(&s.sc, s.rec[:0], plaintext)
	_, err := f.pc.WriteToUDPAddrPort(rec, f.peer)
	s.rec = rec[:0]
	return err
}

// open decrypts one application-data record in place; ok=false for a foreign epoch, a bad or a replayed record.
func (f *dtlsFast) open(b []byte) ([]byte, bool) { return f.Open(b) }
