package netstack

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"ocgate/egress"
)

const (
	tcpDialTimeout    = 10 * time.Second
	tcpProtocolNumber = 6
)

// handleTCP runs (in its own goroutine, started by the forwarder) for each new connection a client opens. It
// decides, dials the destination from the host, and only then completes the client's handshake, so the client
// sees what a real network would show: a refused connection is reset, an unreachable one times out. The
// forwarder ignores SYN retransmits while a request is in flight.
func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	start := time.Now()
	src, dst := toAddr(id.RemoteAddress), toAddr(id.LocalAddress)
	p := s.lookup(src)
	if p == nil || p.closed.Load() || s.ctx.Err() != nil {
		r.Complete(true)
		return
	}
	defer s.contain(p, "TCP flow")
	srcAP, dstAP := netip.AddrPortFrom(src, id.RemotePort), netip.AddrPortFrom(dst, id.LocalPort)
	if s.isGateway(dst) {
		if s.cfg.ServeDNS && id.LocalPort == 53 && p.acquireDNSFlow() {
			defer p.releaseDNSFlow()
			if !p.acquireFlow() {
				r.Complete(true)
				return
			}
			defer p.releaseFlow()
			if c, _ := s.accept(r); c != nil {
				s.serveDNSTCP(p, c)
			}
			return
		}
		r.Complete(true)
		return
	}
	if v := p.decide(tcpProtocolNumber, dstAP); v != egress.Allow {
		s.logRefused(p, "tcp", src, dstAP, v.String())
		s.logFlow(p, "tcp", srcAP, dstAP, start, 0, 0, "refused", v.String())
		r.Complete(true)
		return
	}
	// The caps (limits.go): live flows, then flows being opened, then the server's dials.
	if !p.acquireFlow() {
		r.Complete(true)
		return
	}
	defer p.releaseFlow()
	if !p.acquireOpening() {
		r.Complete(true)
		return
	}
	hc, err := s.dialTCP(netip.AddrPortFrom(dst, id.LocalPort))
	if dst.Is6() && (errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH)) {
		// The host cannot reach this IPv6 address; if the client got it from our DNS for a name that also has
		// an IPv4 address the user may reach, the flow goes there instead (dns.go).
		if alt, ok := s.ipv4Fallback(p, dst, id.LocalPort); ok {
			s.log.Debug("IPv6 destination unreachable from the host: using its name's IPv4 address", "user", p.sess.User, "dst", dst, "via", alt)
			hc, err = s.dialTCP(netip.AddrPortFrom(alt, id.LocalPort))
		}
	}
	if errors.Is(err, errDialLimit) {
		p.releaseOpening()
		r.Complete(true)
		return
	}
	if err != nil {
		p.releaseOpening()
		s.stats.tcpDialFailed.Add(1)
		// Refused: reset, as the destination did. No route or no host: ICMP unreachable, as a router says. A
		// timeout: silence, and the client times out as on a real network.
		switch {
		case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
			r.Complete(false)
			p.dialUnreachable(dstAP, id.RemotePort, errors.Is(err, syscall.ENETUNREACH))
		default:
			r.Complete(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET))
		}
		s.log.Debug("TCP dial failed", "user", p.sess.User, "dst", netip.AddrPortFrom(dst, id.LocalPort), "err", err)
		s.logFlow(p, "tcp", srcAP, dstAP, start, 0, 0, "failed", err.Error())
		return
	}
	hcc, ok := hc.(halfCloser)
	if !ok {
		hcc = fullCloser{hc}
	}
	c, ep := s.accept(r) // returns once the client's handshake is over
	p.releaseOpening()
	if c == nil {
		hc.Close()
		return
	}
	s.stats.tcpFlows.Add(1)
	// When the session ends its flows are aborted (reset), not closed: a closed endpoint would linger in
	// TIME_WAIT, and the next session with this address (ocproxy restarts its ports from the same number) would
	// find its first connection swallowed by it.
	ab := aborter{ep}
	if !p.track(ab, hc) {
		ep.Abort()
		hc.Close()
		return
	}
	p.wg.Add(1)
	defer p.wg.Done()
	nUp, nDown, up, down := relay(c, hcc)
	p.untrack(ab, hc)
	s.logFlow(p, "tcp", srcAP, dstAP, start, nUp, nDown, "ended", "")
	if up != nil || down != nil {
		s.log.Debug("TCP flow ended with an error", "user", p.sess.User, "dst", netip.AddrPortFrom(dst, id.LocalPort), "client_to_host", up, "host_to_client", down)
	}
}

// accept completes the client's handshake and returns the connection and its endpoint, or nil (after a reset) on
// failure.
func (s *Stack) accept(r *tcp.ForwarderRequest) (*gonet.TCPConn, tcpip.Endpoint) {
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		r.Complete(true)
		return nil, nil
	}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	return gonet.NewTCPConn(&wq, ep), ep
}

// aborter resets a flow's endpoint when its session's port closes.
type aborter struct{ ep tcpip.Endpoint }

func (a aborter) Close() error {
	a.ep.Abort()
	return nil
}

func toAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// halfCloser is a connection whose write side can be closed alone (TCP).
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// fullCloser adapts a connection without half-close (a custom Dialer's): CloseWrite closes it all.
type fullCloser struct{ net.Conn }

func (c fullCloser) CloseWrite() error { return c.Conn.Close() }
