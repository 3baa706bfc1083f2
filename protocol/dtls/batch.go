package dtls

// The fast path's send side. pion runs the handshake (and stays in charge of handshake retransmissions and alerts);
// application-data records are sealed and opened by package dtlsrec (one AEAD call, no allocation) and go
// straight onto the shared UDP socket, batched with sendmmsg when the tunnel's queue holds several.

import (
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtlsrec"
)

// Batch collects sealed records of one tunnel and sends them with one sendmmsg(2), equal-sized runs as UDP
// GSO buffers (udpWriter), when the tunnel's queue runs dry or the batch is full. Records are sealed in place in
// the packets' buffers (datapath.Buffer's room), which the batch holds until they are sent. It belongs to the
// tunnel's writer goroutine.
type Batch struct {
	f    *dtlsrec.Conn
	w    *udpWriter
	sc   dtlsrec.Scratch
	recs [batchLen][]byte
	held [batchLen]*datapath.Buffer
	n    int
	// Sends and Records count the batch's sendmmsg calls and the records they carried (the writer logs them
	// when the tunnel ends: records per send is how well the batching works).
	Sends, Records uint64
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

// Add seals the record held by p — the packet type byte just before the packet, then the packet:
// p.B[datapath.Headroom-1:datapath.Headroom+p.N] — in place, and takes p over until the batch is sent (then it is
// released). It sends the batch first if it is full; if that fails, p is untouched and still the caller's.
func (b *Batch) Add(p *datapath.Buffer) error {
	if b.n == batchLen {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	b.recs[b.n] = b.f.SealInPlace(&b.sc, p.B, datapath.Headroom-1, datapath.Headroom+p.N)
	b.held[b.n] = p
	b.n++
	return nil
}

// Len is the number of records waiting.
func (b *Batch) Len() int { return b.n }

// Flush sends what the batch holds and releases the buffers, whether or not the send worked.
func (b *Batch) Flush() error {
	n := b.n
	b.n = 0
	b.Sends++
	b.Records += uint64(n)
	err := b.w.Send(b.recs[:n])
	for i := range n {
		b.held[i].Release()
		b.held[i], b.recs[i] = nil, nil
	}
	return err
}
