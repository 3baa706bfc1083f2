package netstack

import (
	"io"
	"net"
	"sync"
)

// relayBufs are the copy buffers of TCP relays: large, so that the stack gets big writes (full segments).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// relay copies both ways between a and b until both directions have ended, propagating half-closes, then closes
// both. It returns how many bytes went each way and why a direction failed.
func relay(a, b halfCloser) (nAB, nBA int64, errAB, errBA error) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); nAB, errAB = pipe(b, a) }()
	go func() { defer wg.Done(); nBA, errBA = pipe(a, b) }()
	wg.Wait()
	a.Close()
	b.Close()
	return nAB, nBA, errAB, errBA
}

// pipe copies src to dst, then closes dst's write side (or both if the copy failed, returning why).
func pipe(dst, src halfCloser) (int64, error) {
	bp := relayBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	relayBufs.Put(bp)
	if err != nil {
		dst.Close()
		src.Close()
		return n, err
	}
	dst.CloseWrite()
	return n, nil
}

// onlyReader/onlyWriter hide ReadFrom/WriteTo so io.CopyBuffer uses our buffer.
type onlyReader struct{ net.Conn }

func (r onlyReader) Read(p []byte) (int, error) { return r.Conn.Read(p) }

type onlyWriter struct{ net.Conn }

func (w onlyWriter) Write(p []byte) (int, error) { return w.Conn.Write(p) }
