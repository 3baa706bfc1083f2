package dtls

// The fast path's send side. pion runs the handshake (and stays in charge of handshake retransmissions and alerts);
// application-data records are sealed and opened by package dtlsrec (one AEAD call, no allocation) and go
// straight onto the shared UDP socket, batched with sendmmsg when the tunnel's queue holds several.

import (
	"ocgate/protocol/dtlsrec"
)

// Batch collects sealed records of one tunnel and sends them with one sendmmsg(2), equal-sized runs as UDP
// GSO buffers (udpWriter), when the tunnel's queue runs dry or the batch is full. It belongs to the tunnel's
// writer goroutine.
type Batch struct {
	f    *dtlsrec.Conn
	w    *udpWriter
	sc   dtlsrec.Scratch
	bufs [batchLen][]byte
	n    int
}

const batchLen = 32

// NewBatch returns a batch for c's records (c.Fast() must be true).
func (c *Conn) NewBatch() (*Batch, error) { return newBatch(c.fast) }

func newBatch(f *dtlsrec.Conn) (*Batch, error) {
	w, err := newUDPWriter(f.PC, f.Peer, batchLen)
	if err != nil {
		return nil, err
	}
	return &Batch{f: f, w: w}, nil
}

// Add seals plaintext into the batch, sending the batch first if it is full.
func (b *Batch) Add(plaintext []byte) error {
	if b.n == batchLen {
		if err := b.Flush(); err != nil {
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

// Len is the number of records waiting.
func (b *Batch) Len() int { return b.n }

// Flush sends what the batch holds.
func (b *Batch) Flush() error {
	n := b.n
	b.n = 0
	return b.w.Send(b.bufs[:n])
}
