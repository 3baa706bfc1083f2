package protocol

import (
	"net"
	"sync"
)

// batchConn sits below crypto/tls and lets a tunnel's writer turn a burst of TLS records (one per CSTP frame, as
// openconnect requires) into few write(2) calls: while batching is on, Write appends to a buffer and Flush sends
// it. Records stay separate — only the syscalls are batched (docs/protocol.md §6.2).
type batchConn struct {
	net.Conn
	// unbatched: SetBatching never turns buffering on. A proxy that terminated TLS in front (edge.go) re-records
	// what it reads: frames that reach it in one read(2) share one TLS record, which openconnect drops
	// (docs/protocol.md §6.2), so each frame gets its own write.
	unbatched bool
	// beforeRead, when set, runs before each read(2): crypto/tls reads only once it has handed on every complete
	// record it holds, so the tunnel's reader ends its burst of packets there (tunnel.endTLSBurst). Set before the
	// tunnel's reader starts, and read by that goroutine only.
	beforeRead func()

	mu       sync.Mutex
	batching bool    // guarded by mu
	buf      []byte  // guarded by mu: pending bytes, flushed before it would exceed batchSize
	bufp     *[]byte // guarded by mu: the pooled buffer buf lives in, nil between bursts
	err      error   // guarded by mu: first write error, returned forever after
}

// batchSize bounds the buffered bytes: about four maximum TLS records, few enough to keep latency low.
const batchSize = 64 << 10

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

// batchBufs lends the buffer for one burst: a connection holds one only between its first buffered write and the
// flush, so idle tunnels (most of them) hold none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchSize); return &b }}

// Read reads from the connection, after beforeRead.
func (c *batchConn) Read(p []byte) (int, error) {
	if c.beforeRead != nil {
		c.beforeRead()
	}
	return c.Conn.Read(p)
}

// Write sends p at once, or buffers it while batching is on.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.batching {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Write(p)
		c.err = err
		return n, err
	}
	if len(c.buf)+len(p) > batchSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= batchSize {
		n, err := c.Conn.Write(p)
		c.err = err
		return n, err
	}
	if c.bufp == nil {
		c.bufp = batchBufs.Get().(*[]byte)
		c.buf = (*c.bufp)[:0]
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// SetBatching turns buffering on or off; turning it off flushes.
func (c *batchConn) SetBatching(on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = on && !c.unbatched
	if !c.batching {
		return c.flushLocked()
	}
	return nil
}

// Flush writes what is buffered.
func (c *batchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if c.err != nil || len(c.buf) == 0 {
		return c.err
	}
	_, err := c.Conn.Write(c.buf)
	*c.bufp = c.buf[:0]
	batchBufs.Put(c.bufp)
	c.buf, c.bufp = nil, nil
	c.err = err
	return err
}
