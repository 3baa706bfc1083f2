package protocol

// The DTLS fast path. pion runs the handshake (and stays in charge of handshake retransmissions and alerts);
// application-data records are sealed and opened by package dtlsrec (one AEAD call, no allocation) and go
// straight onto the shared UDP socket, batched with sendmmsg when the tunnel's queue holds several.

import (
	"ocgate/protocol/dtlsrec"
)

// dtlsBatch collects sealed records of one tunnel and sends them with one sendmmsg(2), equal-sized runs as UDP
// GSO buffers (udpWriter), when the tunnel's queue runs dry or the batch is full. It belongs to the tunnel's
// writer goroutine.
type dtlsBatch struct {
	f    *dtlsrec.Conn
	w    *udpWriter
	sc   dtlsrec.Scratch
	bufs [dtlsBatchLen][]byte
	n    int
}

const dtlsBatchLen = 32

func newDTLSBatch(f *dtlsrec.Conn) (*dtlsBatch, error) {
	w, err := newUDPWriter(f.PC, f.Peer, dtlsBatchLen)
	if err != nil {
		return nil, err
	}
	return &dtlsBatch{f: f, w: w}, nil
}

// add seals plaintext into the batch, sending the batch first if it is full.
func (b *dtlsBatch) add(plaintext []byte) error {
	if b.n == dtlsBatchLen {
		if err := b.flush(); err != nil {
			return err
		}
	}
	// Buffers are allocated as deep as the batches get (a quiet tunnel holds one or two), sized for the usual
	// MTU-sized record; a bigger one grows its buffer once.
	if need := dtlsrec.HeaderLen + 8 + len(plaintext) + 16; cap(b.bufs[b.n]) < need {
		b.bufs[b.n] = make([]byte, 0, max(need, 2048))
	}
	b.bufs[b.n] = b.f.Seal(&b.sc, b.bufs[b.n][:0], plaintext)
	b.n++
	return nil
}

// flush sends what the batch holds.
func (b *dtlsBatch) flush() error {
	n := b.n
	b.n = 0
	return b.w.Send(b.bufs[:n])
}
