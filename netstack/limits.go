package netstack

// Limits and per-session policy on new flows, beyond the egress policy:
//
//	egress policy             the session's egress.SessionPolicy (routes, lists, client_to_client,
//	                          restrict_user_to_ports), asked once per new flow (TCP reset, UDP dropped, ICMP echo
//	                          answered "administratively prohibited") and per client-to-client packet (dropped);
//	                          flows to the gateway never ask
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

// decide asks the session's egress policy about a new flow of the stack towards dst and counts a refusal. The
// flow gets no Peer: a client's address never goes to the host.
func (p *port) decide(proto uint8, dst netip.AddrPort) egress.Verdict {
	return p.count(p.pol.Decide(egress.Flow{Proto: proto, Dst: dst}))
}

// decidePacket asks the session's egress policy about a packet to switch to q, another session.
func (p *port) decidePacket(pkt []byte, q *port) egress.Verdict {
	_, f, ok := egress.ParsePacket(pkt)
	if !ok {
		return egress.DenyNotRouted // Send checked its addresses: not reached
	}
	f.Peer = q.pol
	return p.count(p.pol.Decide(f))
}

func (p *port) count(v egress.Verdict) egress.Verdict {
	switch v {
	case egress.Allow, egress.DenyClientToClient: // client-to-client refusals are counted by the switch
	case egress.DenyPort:
		p.s.stats.refusedPorts.Add(1)
	default:
		p.s.stats.refusedPolicy.Add(1)
	}
	return v
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
