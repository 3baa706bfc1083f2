package netstack

// ICMP echo towards the world. gVisor would answer every echo request itself (the NIC is promiscuous), which is a
// lie for hosts that are down. So echo requests are taken out before the stack (except those for the gateway,
// which the stack answers truthfully) and re-originated from the host, and the client gets an echo reply only if
// the host got one:
//
//	socket  an unprivileged ICMP socket (SOCK_DGRAM, IPPROTO_ICMP), when net.ipv4.ping_group_range admits us
//	raw     a raw ICMP socket, with CAP_NET_RAW
//	exec    the system ping (which carries cap_net_raw), one process per echo request, bounded
//
// The first that works at start-up is used (Config.ICMP forces one, or "off"). A destination the policy refuses
// gets ICMP destination unreachable, administratively prohibited (type 3 code 13), and so does one that
// restrict_user_to_ports refuses (icmp() not allowed, or denied). IPv4 only for now.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip"
	tcpipchecksum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"ocgate/egress"
)

const (
	icmpv6ProtocolNumber = 58
	echoTimeout          = 3 * time.Second
	maxEchoPerSession    = 8
	maxEchoServer        = 64
	echoReserve          = 16 // of maxEchoServer, for sessions holding no slot (echoSlot)
	icmpProtocolNumber   = 1
)

// pinger sends one echo request to dst from the host and waits for the reply.
type pinger interface {
	echo(ctx context.Context, dst netip.Addr, id, seq uint16, data []byte) error
	String() string
}

// newPinger picks the ICMP strategy: want is "auto" (or ""), "socket", "raw", "exec" or "off" (nil pinger).
func newPinger(want string) (pinger, error) {
	try := []string{"socket", "raw", "exec"}
	switch want {
	case "", "auto":
	case "off":
		return nil, nil
	case "socket", "raw", "exec":
		try = []string{want}
	default:
		return nil, fmt.Errorf("ICMP strategy %q: want auto, socket, raw, exec or off", want)
	}
	var errs []error
	for _, s := range try {
		var p pinger
		var err error
		switch s {
		case "socket":
			p, err = probeSocket("udp4")
		case "raw":
			p, err = probeSocket("ip4:icmp")
		case "exec":
			var path string
			if path, err = exec.LookPath("ping"); err == nil {
				p = execPinger{path: path}
			}
		}
		if err == nil {
			return p, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
	}
	return nil, fmt.Errorf("no way to send ICMP echo from this host: %w", errors.Join(errs...))
}

// socketPinger uses an unprivileged ICMP socket ("udp4") or a raw one ("ip4:icmp"), one per echo request.
type socketPinger struct{ network string }

func probeSocket(network string) (pinger, error) {
	c, err := icmp.ListenPacket(network, "0.0.0.0")
	if err != nil {
		return nil, err
	}
	c.Close()
	return socketPinger{network: network}, nil
}

func (p socketPinger) String() string {
	if p.network == "udp4" {
		return "unprivileged ICMP socket"
	}
	return "raw ICMP socket"
}

func (p socketPinger) echo(ctx context.Context, dst netip.Addr, id, seq uint16, data []byte) error {
	network, local, proto := p.network, "0.0.0.0", icmpProtocolNumber
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, local, proto = map[string]string{"udp4": "udp6", "ip4:icmp": "ip6:ipv6-icmp"}[p.network], "::", icmpv6ProtocolNumber
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, local)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: int(id), Seq: int(seq), Data: data}}
	b, err := msg.Marshal(nil) // ICMPv6: the kernel fills in the checksum
	if err != nil {
		return err
	}
	datagram := network == "udp4" || network == "udp6"
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if datagram {
		to = &net.UDPAddr{IP: dst.AsSlice()} // the kernel replaces the ID with the socket's and filters replies
	}
	if _, err := c.WriteTo(b, to); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		rm, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || rm.Type != replyType {
			continue // a raw socket sees every ICMP message of the host
		}
		e, ok := rm.Body.(*icmp.Echo)
		if !ok || e.Seq != int(seq) || (!datagram && e.ID != int(id)) {
			continue
		}
		if a, ok := netip.AddrFromSlice(addrIP(from)); !ok || a.Unmap() != dst {
			continue
		}
		return nil
	}
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.IPAddr:
		return a.IP
	}
	return nil
}

// execPinger runs the system ping once per echo request.
type execPinger struct{ path string }

func (execPinger) String() string { return "system ping" }

func (p execPinger) echo(ctx context.Context, dst netip.Addr, _, _ uint16, data []byte) error {
	secs := strconv.Itoa(int(echoTimeout / time.Second))
	return exec.CommandContext(ctx, p.path, "-n", "-q", "-c", "1", "-W", secs, "-s", strconv.Itoa(len(data)), dst.String()).Run()
}

// takeEcho answers an echo request (IPv4, not for the gateway) of the session's client. It runs in its own
// goroutine; false means the request was not taken (the caller drops it).
func (p *port) takeEcho(pkt []byte) bool {
	s := p.s
	ip := header.IPv4(pkt)
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize || len(pkt) < hl+header.ICMPv4MinimumSize || ip.FragmentOffset() != 0 || ip.More() {
		return false
	}
	ic := header.ICMPv4(pkt[hl:])
	if ic.Type() != header.ICMPv4Echo {
		return false
	}
	dst := netip.AddrFrom4(ip.DestinationAddress().As4())
	if p.decide(icmpProtocolNumber, netip.AddrPortFrom(dst, 0)) != egress.Allow {
		p.deliverICMP(unreachable(s.cfg.Gateway, pkt, header.ICMPv4AdminProhibited))
		return true
	}
	req := append([]byte(nil), pkt...) // the caller's buffer is not ours after Send returns
	ic = header.ICMPv4(req[hl:])
	p.echoFromHost(dst, ic.Ident(), ic.Sequence(), ic.Payload(), req, func() {
		// The reply: addresses swapped, type 0, same ID, sequence and data.
		ic.SetType(header.ICMPv4EchoReply)
		ic.SetChecksum(0)
		ic.SetChecksum(^checksum(req[hl:]))
		ip := header.IPv4(req)
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		ip.SetSourceAddress(dst)
		ip.SetDestinationAddress(src)
		ip.SetTTL(64)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	})
	return true
}

// echoFromHost sends an echo request to dst from the host (bounded: a slot per session and per server) in its own
// goroutine and, when the host gets the reply, turns req (the client's request, copied) into the reply with
// makeReply and delivers it. Without a strategy or a free slot the request is dropped.
func (p *port) echoFromHost(dst netip.Addr, id, seq uint16, data, req []byte, makeReply func()) {
	s := p.s
	if s.pinger == nil || !p.echoSlot() {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer s.contain(p, "ICMP echo")
		defer p.echoDone()
		ctx, cancel := context.WithTimeout(s.ctx, echoTimeout)
		defer cancel()
		if err := s.pinger.echo(ctx, dst, id, seq, data); err != nil {
			s.stats.echoLost.Add(1)
			return
		}
		s.stats.echoAnswered.Add(1)
		makeReply()
		p.deliverICMP(req)
	}()
}

// echoSlot takes one of the server's echo slots for p, within p's fair share (abuse.go): maxEchoServer divided
// among the sessions holding slots, at most maxEchoPerSession; the last echoReserve slots go only to sessions that
// hold none, so sessions that took their share before others came cannot leave a newcomer without one.
func (p *port) echoSlot() bool {
	s := p.s
	n := int(p.echoes.Add(1))
	if n == 1 {
		s.echoers.Add(1)
	}
	share := min(maxEchoPerSession, max(1, maxEchoServer/int(s.echoers.Load())))
	ok := n <= share
	if ok {
		held := int(s.echoInFlight.Add(1))
		if ok = held <= maxEchoServer && (n == 1 || held <= maxEchoServer-echoReserve); !ok {
			s.echoInFlight.Add(-1)
		}
	}
	if !ok {
		p.echoRelease()
		p.refuseAbuse(&s.stats.echoRefused, "ICMP echo requests over the session's share of the server's slots", "share", share)
		return false
	}
	return true
}

func (p *port) echoDone() {
	p.s.echoInFlight.Add(-1)
	p.echoRelease()
}

func (p *port) echoRelease() {
	if p.echoes.Add(-1) == 0 {
		p.s.echoers.Add(-1)
	}
}

func (p *port) deliverICMP(pkt []byte) {
	if pkt != nil && !p.closed.Load() {
		p.s.stats.packetsOut.Add(1)
		p.sess.Deliver(pkt)
	}
}

// unreachable builds ICMP destination unreachable (type 3, code) from the gateway about the client's packet
// orig: its IP header and first 8 bytes of payload (RFC 792).
func unreachable(gw netip.Addr, orig []byte, code header.ICMPv4Code) []byte {
	oip := header.IPv4(orig)
	quote := min(len(orig), int(oip.HeaderLength())+8)
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+quote)
	ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4DstUnreachable)
	ic.SetCode(code)
	copy(ic.Payload(), orig[:quote])
	ic.SetChecksum(^checksum(pkt[header.IPv4MinimumSize:]))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(gw.As4()), DstAddr: oip.SourceAddress()})
	ip.SetChecksum(^ip.CalculateChecksum())
	return pkt
}

func checksum(b []byte) uint16 { return tcpipchecksum.Checksum(b, 0) }

// takeEcho6 is takeEcho for ICMPv6 (an echo request right after the fixed IPv6 header).
func (p *port) takeEcho6(pkt []byte) bool {
	s := p.s
	ip := header.IPv6(pkt)
	if len(pkt) < header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize || ip.NextHeader() != icmpv6ProtocolNumber {
		return false
	}
	ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
	if ic.Type() != header.ICMPv6EchoRequest {
		return false
	}
	dst := netip.AddrFrom16(ip.DestinationAddress().As16())
	if p.decide(icmpv6ProtocolNumber, netip.AddrPortFrom(dst, 0)) != egress.Allow {
		p.deliverICMP(unreachable6(s.cfg.Gateway6, pkt))
		return true
	}
	req := append([]byte(nil), pkt...)
	ic = header.ICMPv6(req[header.IPv6MinimumSize:])
	p.echoFromHost(dst, ic.Ident(), ic.Sequence(), ic.Payload(), req, func() {
		ip := header.IPv6(req)
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		ip.SetSourceAddress(dst)
		ip.SetDestinationAddress(src)
		ip.SetHopLimit(64)
		ic.SetType(header.ICMPv6EchoReply)
		ic.SetChecksum(0)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: dst, Dst: src}))
	})
	return true
}

// unreachable6 builds ICMPv6 destination unreachable, administratively prohibited (type 1 code 1) from the
// gateway about the client's packet orig (as much of it as fits in 1280 bytes, RFC 4443).
func unreachable6(gw netip.Addr, orig []byte) []byte {
	return unreachable6code(gw, orig, header.ICMPv6Prohibited)
}

// unreachable6code is unreachable6 with another destination-unreachable code.
func unreachable6code(gw netip.Addr, orig []byte, code header.ICMPv6Code) []byte {
	if !gw.Is6() {
		return nil
	}
	quote := min(len(orig), 1280-header.IPv6MinimumSize-header.ICMPv6DstUnreachableMinimumSize)
	pkt := make([]byte, header.IPv6MinimumSize+header.ICMPv6DstUnreachableMinimumSize+quote)
	oip := header.IPv6(orig)
	ip := header.IPv6(pkt)
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(len(pkt) - header.IPv6MinimumSize), TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit: 64, SrcAddr: tcpip.AddrFrom16(gw.As16()), DstAddr: oip.SourceAddress()})
	ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6DstUnreachable)
	ic.SetCode(code)
	copy(ic[header.ICMPv6DstUnreachableMinimumSize:], orig[:quote])
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	return pkt
}

// synKey names a client's TCP connection attempt.
type synKey struct {
	dst     netip.AddrPort
	srcPort uint16
}

// maxSYNs bounds the SYN headers a session keeps for ICMP errors (more than the half-open cap ever needs).
const maxSYNs = 256

// noteSYN keeps the IPv4 header and first 8 bytes of a client's SYN, which an ICMP error about that connection
// must quote (Linux checks the quoted sequence number against the connection's).
func (p *port) noteSYN(pkt []byte) {
	ip := header.IPv4(pkt)
	hl := int(ip.HeaderLength())
	if len(pkt) < hl+header.TCPMinimumSize {
		return
	}
	tcp := header.TCP(pkt[hl:])
	if tcp.Flags()&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn {
		return
	}
	k := synKey{dst: netip.AddrPortFrom(netip.AddrFrom4(ip.DestinationAddress().As4()), tcp.DestinationPort()), srcPort: tcp.SourcePort()}
	q := append([]byte(nil), pkt[:hl+8]...)
	p.synMu.Lock()
	if p.synQuotes == nil {
		p.synQuotes = make(map[synKey][]byte)
	}
	if len(p.synQuotes) >= maxSYNs {
		for old := range p.synQuotes { // evict any one
			delete(p.synQuotes, old)
			break
		}
	}
	p.synQuotes[k] = q
	p.synMu.Unlock()
}

// takeSYN returns (and forgets) the quoted SYN of a connection attempt.
func (p *port) takeSYN(dst netip.AddrPort, srcPort uint16) []byte {
	p.synMu.Lock()
	defer p.synMu.Unlock()
	k := synKey{dst: dst, srcPort: srcPort}
	q := p.synQuotes[k]
	delete(p.synQuotes, k)
	return q
}

// dialUnreachable tells the client that its connection attempt cannot reach the destination, as a router would:
// ICMP network or host unreachable quoting its SYN. It reports whether it could (IPv4, SYN seen).
func (p *port) dialUnreachable(dst netip.AddrPort, srcPort uint16, netUnreachable bool) bool {
	q := p.takeSYN(dst, srcPort)
	if q == nil {
		return false
	}
	code := header.ICMPv4HostUnreachable
	if netUnreachable {
		code = header.ICMPv4NetUnreachable
	}
	p.s.stats.icmpErrors.Add(1)
	p.deliverICMP(unreachable(p.s.cfg.Gateway, q, code))
	return true
}

// udpUnreachable tells the client that the destination of its UDP flow src → dst refused it (the host got ICMP
// port unreachable): ICMP(v6) port unreachable quoting a header of the flow (the client matches it by addresses
// and ports).
func (p *port) udpUnreachable(src, dst netip.AddrPort) {
	udp := make([]byte, header.UDPMinimumSize)
	header.UDP(udp).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: header.UDPMinimumSize})
	var pkt []byte
	if src.Addr().Is4() {
		q := make([]byte, header.IPv4MinimumSize, header.IPv4MinimumSize+len(udp))
		header.IPv4(q).Encode(&header.IPv4Fields{TotalLength: uint16(cap(q)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
			SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4())})
		header.IPv4(q).SetChecksum(^header.IPv4(q).CalculateChecksum())
		pkt = unreachable(p.s.cfg.Gateway, append(q, udp...), header.ICMPv4PortUnreachable)
	} else {
		q := make([]byte, header.IPv6MinimumSize, header.IPv6MinimumSize+len(udp))
		header.IPv6(q).Encode(&header.IPv6Fields{PayloadLength: uint16(len(udp)), TransportProtocol: header.UDPProtocolNumber,
			HopLimit: 64, SrcAddr: tcpip.AddrFrom16(src.Addr().As16()), DstAddr: tcpip.AddrFrom16(dst.Addr().As16())})
		pkt = unreachable6code(p.s.cfg.Gateway6, append(q, udp...), header.ICMPv6PortUnreachable)
	}
	if pkt != nil {
		p.s.stats.icmpErrors.Add(1)
		p.deliverICMP(pkt)
	}
}
