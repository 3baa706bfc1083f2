package netstack

import (
	"io"
	"net"
	"sync"
)

// relayBufs are the copy buffers of TCP relays: large, so that the stack gets big writes (full segments).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// relay copies both ways between a and b until both directions have ended, propagating half-closes, then closes
// both.
func relay(a, b halfCloser) (errAB, errBA error) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errAB = pipe(b, a) }()
	go func() { defer wg.Done(); errBA = pipe(a, b) }()
	wg.Wait()
	a.Close()
	b.Close()
	return errAB, errBA
}

// pipe copies src to dst, then closes dst's write side (or both if the copy failed, returning why).
func pipe(dst, src halfCloser) error {
	bp := relayBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	relayBufs.Put(bp)
	if err != nil {
		dst.Close()
		src.Close()
		return err
	}
	dst.CloseWrite()
	return nil
}

// onlyReader/onlyWriter hide ReadFrom/WriteTo so io.CopyBuffer uses our buffer.
type onlyReader struct{ net.Conn }

func (r onlyReader) Read(p []byte) (int, error) { return r.Conn.Read(p) }

type onlyWriter struct{ net.Conn }

func (w onlyWriter) Write(p []byte) (int, error) { return w.Conn.Write(p) }
