package dtls

import (
	"context"
	"net"
	"syscall"
)

// Listen opens the server's UDP sockets on addr: n of them in one SO_REUSEPORT group where the system has that
// (Linux), else one. The kernel keeps each client address and port on one socket of the group (a hash of the
// 4-tuple), and NewServer gives every socket its own reader: DTLS input, and the datapath input it runs, spread
// over n cores. Another process could join the group only with the same user id, which could do worse anyway.
func Listen(addr string, n int) ([]*net.UDPConn, error) {
	if n <= 1 || reusePort == nil {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		return []*net.UDPConn{pc.(*net.UDPConn)}, nil
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = reusePort(fd) }); err != nil {
			return err
		}
		return serr
	}}
	first, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return Listen(addr, 1) // a kernel without SO_REUSEPORT; or the address is taken, which this says again
	}
	pcs := []*net.UDPConn{first.(*net.UDPConn)}
	bound := first.LocalAddr().String() // the port the system chose, when addr's is 0
	for len(pcs) < n {
		pc, err := lc.ListenPacket(context.Background(), "udp", bound)
		if err != nil {
			for _, pc := range pcs {
				pc.Close()
			}
			return nil, err
		}
		pcs = append(pcs, pc.(*net.UDPConn))
	}
	return pcs, nil
}
