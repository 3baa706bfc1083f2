package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"ocgate/egress"
)

const (
	maxDatagram       = 65535
	udpProtocolNumber = 17
)

// handleUDP runs in the stack's packet path for the first datagram of a new flow (client addr:port → dst:port).
// It must not block: it creates the flow's endpoint (which receives this first datagram) and starts the relay.
// Returning true means "handled": refused datagrams are dropped silently.
func (s *Stack) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	start := time.Now()
	src, dst := toAddr(id.RemoteAddress), toAddr(id.LocalAddress)
	p := s.lookup(src)
	if p == nil || p.closed.Load() || s.ctx.Err() != nil {
		return true
	}
	dnsFlow := s.isGateway(dst) && id.LocalPort == 53 && s.cfg.ServeDNS
	if !dnsFlow {
		if s.isGateway(dst) {
			return false // nothing listens: the stack answers port unreachable
		}
		if v := p.decide(udpProtocolNumber, netip.AddrPortFrom(dst, id.LocalPort)); v != egress.Allow {
			s.logRefused(p, "udp", src, netip.AddrPortFrom(dst, id.LocalPort), v.String())
			s.logFlow(p, "udp", netip.AddrPortFrom(src, id.RemotePort), netip.AddrPortFrom(dst, id.LocalPort), start, 0, 0, "refused", v.String())
			return true
		}
	}
	if dnsFlow && !p.acquireDNSFlow() {
		return true
	}
	release := func() {
		p.releaseFlow()
		if dnsFlow {
			p.releaseDNSFlow()
		}
	}
	if !p.acquireFlow() {
		if dnsFlow {
			p.releaseDNSFlow()
		}
		return true
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		release()
		return true
	}
	if dnsFlow {
		ep.SocketOptions().SetReceiveBufferSize(dnsRcvBuf, true)
	}
	c := gonet.NewUDPConn(&wq, ep)
	if !p.track(c) {
		c.Close()
		release()
		return true
	}
	s.stats.udpFlows.Add(1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer s.contain(p, "UDP flow")
		defer release()
		defer p.untrack(c)
		defer c.Close()
		if dnsFlow {
			s.serveDNSUDP(p, c)
			return
		}
		up, down, err := s.relayUDP(p, c, netip.AddrPortFrom(src, id.RemotePort), netip.AddrPortFrom(dst, id.LocalPort))
		verdict, reason := "ended", ""
		if err != nil {
			verdict, reason = "failed", err.Error()
		}
		s.logFlow(p, "udp", netip.AddrPortFrom(src, id.RemotePort), netip.AddrPortFrom(dst, id.LocalPort), start, up, down, verdict, reason)
	}()
	return true
}

// relayUDP forwards datagrams between the client's flow c and a host socket connected to dst, until the flow has
// been idle for UDPIdleTimeout or the port closes.
// It returns the bytes each way (client to host, host to client).
// A destination port that answers with ICMP port unreachable makes the flow end, and the client gets ICMP port
// unreachable too.
func (s *Stack) relayUDP(p *port, c *gonet.UDPConn, src, dst netip.AddrPort) (up, down int64, err error) {
	ctx, cancel := context.WithTimeout(s.ctx, tcpDialTimeout)
	hc, err := s.dialer.DialContext(ctx, "udp", dst.String())
	cancel()
	if err != nil {
		s.log.Debug("UDP dial failed", "user", p.sess.User, "dst", dst, "err", err)
		return 0, 0, err
	}
	if !p.track(hc) {
		hc.Close()
		return 0, 0, nil
	}
	defer p.untrack(hc)
	var once sync.Once
	stop := func() { once.Do(func() { c.Close(); hc.Close() }) }
	idle := time.AfterFunc(s.cfg.UDPIdleTimeout, stop)
	defer idle.Stop()
	var wg sync.WaitGroup
	var errUp, errDown error
	wg.Add(1)
	go func() {
		defer wg.Done()
		up, errUp = copyDatagrams(hc, c, idle, s.cfg.UDPIdleTimeout)
		stop()
	}()
	down, errDown = copyDatagrams(c, hc, idle, s.cfg.UDPIdleTimeout)
	stop()
	wg.Wait()
	if errors.Is(errUp, syscall.ECONNREFUSED) || errors.Is(errDown, syscall.ECONNREFUSED) {
		p.udpUnreachable(src, dst)
		return up, down, errors.New("port unreachable")
	}
	return up, down, nil
}

var datagramBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// copyDatagrams copies datagrams from src to dst, extending the idle timer on each; it returns the bytes copied
// and the error that ended the copy.
func copyDatagrams(dst, src net.Conn, idle *time.Timer, d time.Duration) (total int64, err error) {
	bp := datagramBufs.Get().(*[]byte)
	defer datagramBufs.Put(bp)
	for {
		n, err := src.Read(*bp)
		if err != nil {
			return total, err
		}
		idle.Reset(d)
		if _, err := dst.Write((*bp)[:n]); err != nil {
			return total, err
		}
		total += int64(n)
	}
}
