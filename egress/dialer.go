package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Dialer opens the host-side connections of netstack flows.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// NewDialer returns a dialer over the host's sockets that refuses, as a last line of defence, any connection whose
// actual destination the policy treats as special (loopback, link-local...) or denied, even if a caller asked.
func NewDialer(p *Policy) Dialer {
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if p.Special(ap.Addr()) {
				return fmt.Errorf("egress to %s refused by policy", ap.Addr())
			}
			return nil
		},
	}
	return d
}
