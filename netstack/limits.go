package netstack

// Limits and per-session policy on new flows, beyond the egress policy:
//
//	restrict_user_to_ports    Session.AllowPort, asked once per new flow (TCP reset, UDP dropped, ICMP echo
//	                          answered "administratively prohibited") and per client-to-client packet (dropped);
//	                          flows to the gateway are exempt
//	MaxFlowsPerSession        live TCP and UDP flows of a session (link.go: acquireFlow)
//	MaxHostFlows              live TCP and UDP flows of all sessions (each holds a host socket), three quarters of
//	                          the open-file limit by default; and a session's share: at most half of what the
//	                          other sessions leave free, at least minFlowShare, so that one user at their caps
//	                          leaves file descriptors for other users' flows and for logins
//	MaxHalfOpenPerSession     TCP flows of a session being opened: the host-side dial, then the client's handshake
//	MaxDialsInFlight          host-side TCP dials of the whole server
//
// A TCP flow refused by a cap is reset at once, so the client sees "connection refused" rather than a timeout, and
// counted (Stats).

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"ocgate/egress"
)

// allowPort applies the session's restrict_user_to_ports to a new flow towards dst.
func (p *port) allowPort(proto uint8, dst netip.AddrPort) bool {
	if f := p.sess.AllowPort; f != nil && !f(proto, dst) {
		p.s.stats.refusedPorts.Add(1)
		return false
	}
	return true
}

// allowPacket applies the session's restrict_user_to_ports to a packet switched to another client.
func (p *port) allowPacket(pkt []byte) bool {
	if f := p.sess.AllowPort; f != nil && !egress.AllowedPacket(pkt, f) {
		p.s.stats.refusedPorts.Add(1)
		return false
	}
	return true
}

// acquireOpening counts a TCP flow being opened against the session's half-open cap.
func (p *port) acquireOpening() bool {
	if int(p.syns.Add(1)) > p.s.cfg.MaxHalfOpenPerSession {
		p.syns.Add(-1)
		p.s.stats.refusedHalfOpen.Add(1)
		return false
	}
	return true
}

func (p *port) releaseOpening() { p.syns.Add(-1) }

// errDialLimit is dialTCP's refusal when MaxDialsInFlight dials are in progress.
var errDialLimit = errors.New("netstack: too many TCP dials in flight")

// dialTCP opens the host side of a TCP flow within the server's dial cap and sets its keepalive.
func (s *Stack) dialTCP(dst netip.AddrPort) (net.Conn, error) {
	if int(s.dials.Add(1)) > s.cfg.MaxDialsInFlight {
		s.dials.Add(-1)
		s.stats.refusedDials.Add(1)
		return nil, errDialLimit
	}
	ctx, cancel := context.WithTimeout(s.ctx, tcpDialTimeout)
	hc, err := s.dialer.DialContext(ctx, "tcp", dst.String())
	cancel()
	s.dials.Add(-1)
	if err != nil {
		return nil, err
	}
	if tc, ok := hc.(*net.TCPConn); ok {
		if d := s.cfg.TCPKeepalive; d > 0 {
			tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d, Count: tcpKeepaliveProbes})
		} else {
			tc.SetKeepAlive(false)
		}
	}
	return hc, nil
}

// tcpKeepaliveProbes unanswered probes, TCPKeepalive apart, end a host-side connection whose peer went away.
const tcpKeepaliveProbes = 4

// minFlowShare is the flows a session may always open while the server's budget is not spent.
const minFlowShare = 16

// hostFlowBudget is three quarters of the open-file limit (at least 64): the default MaxHostFlows.
func hostFlowBudget() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return max(64, int(rl.Cur)*3/4)
}
