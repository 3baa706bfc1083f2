//go:build !linux

package dtls

import (
	"net"
	"net/netip"
)

// udpReader reads one datagram at a time where recvmmsg(2) is not available.
type udpReader struct {
	pc   *net.UDPConn
	buf  []byte
	n    int
	from netip.AddrPort
}

func newUDPReader(pc *net.UDPConn, _, size int) (*udpReader, error) {
	return &udpReader{pc: pc, buf: make([]byte, size)}, nil
}

func (r *udpReader) Read() (int, error) {
	n, from, err := r.pc.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.from = n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	return 1, nil
}

func (r *udpReader) Datagram(int) ([]byte, netip.AddrPort, bool) { return r.buf[:r.n], r.from, true }

// udpWriter sends datagrams one by one where sendmmsg(2) is not available.
type udpWriter struct {
	pc   *net.UDPConn
	peer netip.AddrPort
}

func newUDPWriter(pc *net.UDPConn, peer netip.AddrPort, _ int) (*udpWriter, error) {
	return &udpWriter{pc: pc, peer: peer}, nil
}

func (w *udpWriter) Send(datagrams [][]byte) error {
	for _, d := range datagrams {
		if _, err := w.pc.WriteToUDPAddrPort(d, w.peer); err != nil {
			return err
		}
	}
	return nil
}

// reusePort is nil here: Listen opens one socket (SO_REUSEPORT does not balance datagrams outside Linux).
var reusePort func(fd uintptr) error
