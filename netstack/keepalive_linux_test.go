//go:build linux

package netstack

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// recordingDialer keeps the host-side connections it opened.
type recordingDialer struct {
	net.Dialer
	conns chan net.Conn
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err == nil {
		d.conns <- c
	}
	return c, err
}

// TestTCPKeepalive: the host side of a TCP flow probes after TCPKeepalive of silence (30 s by default), or not at
// all when it is negative.
func TestTCPKeepalive(t *testing.T) {
	for _, tc := range []struct {
		set        time.Duration
		on         int
		idle, intv int
	}{{0, 1, 30, 30}, {7 * time.Second, 1, 7, 7}, {-1, 0, 0, 0}} {
		d := &recordingDialer{Dialer: net.Dialer{KeepAlive: -1}, conns: make(chan net.Conn, 1)}
		s := newLimitStack(t, func(c *Config) { c.Dialer = d; c.TCPKeepalive = tc.set })
		c := attachClient(t, s, clientIP, nil)
		conn, err := c.dial(t, echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		hc := (<-d.conns).(*net.TCPConn)
		raw, _ := hc.SyscallConn()
		var on, idle, intv, cnt int
		raw.Control(func(fd uintptr) {
			on, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
			intv, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
			cnt, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
		})
		if on != tc.on || tc.on == 1 && (idle != tc.idle || intv != tc.intv || cnt != tcpKeepaliveProbes) {
			t.Errorf("TCPKeepalive %s: SO_KEEPALIVE %d, idle %d s, interval %d s, %d probes; want %d, %d, %d, %d",
				tc.set, on, idle, intv, cnt, tc.on, tc.idle, tc.intv, tcpKeepaliveProbes)
		}
		conn.Close()
	}
}
