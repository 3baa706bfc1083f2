package netstack

// Packets in both directions:
//
//	client ─► Port.Send: source checked against the session's addresses, checksums verified (rxchecksum.go),
//	          copied into a PacketBuffer, InjectInbound (gVisor processes it in the caller's goroutine).
//	          SendBurst instead holds TCP segments in the port's GRO (gVisor's receive coalescing) until EndBurst,
//	          which hands each flow's consecutive segments to the stack as one
//	stack  ─► link.WritePackets: bytes copied once, into a pooled datapath.Buffer whose room the tunnel frames the
//	          packet in, destination looked up (no lock), the session's DeliverBuffer (which queues it; it never
//	          blocks)

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// link is the stack's NIC. It reuses channel.Endpoint for attachment and inbound injection but replaces its
// queue: outbound packets go straight to their session.
//
// It declares gVisor's software GSO: a TCP sender then builds segments of up to GSOMaxSize and cuts them into MSS
// packets in one pass (tcp.sendTCPBatch), which reach WritePackets as one list, instead of running its send path
// (options, header, route, NIC) once per MSS. Nothing of it reaches the wire: the packets are MSS-sized as before.
//
// It declares receive checksum offload: gVisor's NIC marks every inbound packet's checksums verified by the link
// (it overwrites the flag a packet carries with this capability), which GRO needs, as a coalesced segment's TCP
// checksum is its first segment's. Port.Send verifies them before injecting (rxchecksum.go).
type link struct {
	*channel.Endpoint
	s *Stack
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
)

func newLink(s *Stack, mtu uint32) *link {
	ep := channel.New(0, mtu, "")
	ep.SupportedGSOKind = stack.GVisorGSOSupported
	return &link{Endpoint: ep, s: s}
}

// Capabilities implements stack.LinkEndpoint: receive checksum offload (see link).
func (*link) Capabilities() stack.LinkEndpointCapabilities { return stack.CapabilityRXChecksumOffload }

// groDispatcher is the dispatcher of the ports' GRO: what it flushes is injected like any packet.
type groDispatcher struct{ l *link }

func (d groDispatcher) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.l.InjectInbound(proto, pkt)
}
func (groDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// newGRO is the New of the stack's pool of GROs (port.burst).
func (l *link) newGRO() any {
	g := &gro.GRO{Dispatcher: groDispatcher{l}}
	g.Init(true)
	return g
}

// GSOMaxSize is the largest segment the TCP sender builds before cutting it up: gVisor's maximum.
func (*link) GSOMaxSize() uint32 { return stack.GVisorGSOMaxSize }

// WritePackets delivers packets the stack sends to the sessions owning their destinations.
// The list is one burst (often one segment cut into MTU packets): a session's packets are held (DeliverBufHeld)
// and its sender kicked once, when the list moves on to another session and at the end, so that the burst
// leaves in one batch.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	var held *port // the session whose packets are held
	for _, pkt := range pkts.AsSlice() {
		n++
		b := datapath.GetBuffer(pkt.Size())
		if b == nil {
			l.s.stats.droppedMalformed.Add(1) // longer than any MTU: the stack sends no such packet
			continue
		}
		copyPacket(b.Packet(), pkt)
		dst, ok := dstAddr(b.Packet())
		if !ok {
			b.Release()
			continue
		}
		p := l.s.lookup(dst)
		if p == nil || p.closed.Load() {
			l.s.stats.droppedNoSession.Add(1)
			b.Release()
			continue
		}
		l.s.stats.packetsOut.Add(1)
		if held != p {
			if held != nil {
				held.sess.KickSender()
			}
			held = p
		}
		p.sess.DeliverBufHeld(b)
	}
	if held != nil {
		held.sess.KickSender()
	}
	return n, nil
}

// copyPacket copies pkt's bytes (headers and payload) into dst, which holds pkt.Size() bytes, without the
// allocation of PacketBuffer.AsSlices.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) {
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(dst[n:], s[skip:])
		skip = 0
	}
}

// dstAddr returns an IP packet's destination address.
func dstAddr(b []byte) (netip.Addr, bool) {
	if len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[16:20])), true
	}
	if len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[24:40])), true
	}
	return netip.Addr{}, false
}

func srcAddr(b []byte) (netip.Addr, tcpip.NetworkProtocolNumber, bool) {
	if len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[12:16])), ipv4.ProtocolNumber, true
	}
	if len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24])), ipv6.ProtocolNumber, true
	}
	return netip.Addr{}, 0, false
}

// port is one session's attachment.
type port struct {
	s      *Stack
	sess   *datapath.Session
	pol    *egress.SessionPolicy
	closed atomic.Bool
	flows  atomic.Int32 // live TCP+UDP flows
	echoes atomic.Int32 // echo requests in flight

	synMu     sync.Mutex
	synQuotes map[synKey][]byte // guarded by synMu: quotes of recent SYNs, for ICMP errors (icmp.go)
	syns      atomic.Int32      // TCP flows being opened (MaxHalfOpenPerSession)

	lim   sessionLimits // bounds on DNS and ICMP work (abuse.go)
	names nameCache     // IPv6 address → the name the built-in DNS answered it for, to this session (dns.go)

	mu      sync.Mutex
	closers map[io.Closer]struct{} // guarded by mu: live flows' conns, closed with the port
	wg      sync.WaitGroup

	// burstMu guards burst: the GRO holding this port's segments between SendBurst and EndBurst, nil otherwise. It
	// comes from the stack's pool for the burst only (a GRO is ~6 KiB), so an idle session holds none. One reader
	// sends a session's bursts (its DTLS socket's), so the lock is uncontended.
	burstMu sync.Mutex
	burst   *gro.GRO
}

func newPort(s *Stack, sess *datapath.Session) *port {
	return &port{s: s, sess: sess, pol: s.policy.Session(sess), closers: make(map[io.Closer]struct{})}
}

var errClosed = errors.New("netstack: port closed")

// Send injects a packet from the client.
func (p *port) Send(pkt []byte) error { return p.send(pkt, false) }

// SendBurst is Send, except that a TCP segment may be held, and coalesced with the flow's next ones, until
// EndBurst (datapath.Burster).
func (p *port) SendBurst(pkt []byte) error { return p.send(pkt, true) }

// EndBurst hands the segments SendBurst held to the stack.
func (p *port) EndBurst() {
	p.burstMu.Lock()
	if g := p.burst; g != nil {
		p.burst = nil
		g.Flush()
		p.s.gros.Put(g)
	}
	p.burstMu.Unlock()
}

func (p *port) send(pkt []byte, burst bool) error {
	if p.closed.Load() {
		return errClosed
	}
	src, proto, ok := srcAddr(pkt)
	if !ok {
		p.s.stats.droppedMalformed.Add(1)
		return nil
	}
	if !slices.Contains(p.sess.Addrs, src) {
		p.s.stats.droppedSpoofed.Add(1)
		return nil
	}
	p.s.stats.packetsIn.Add(1)
	// Client to client: switched here when the policy allows it. Otherwise the packet goes into the stack, whose
	// policy refuses clients' addresses (TCP gets a reset).
	if dst, ok := dstAddr(pkt); ok {
		if q := p.peer(dst); q != nil {
			if p.decidePacket(pkt, q) == egress.Allow {
				p.s.stats.switched.Add(1)
				q.sess.Deliver(pkt)
				return nil
			}
			p.s.stats.deniedClientToClient.Add(1)
		}
	}
	if proto == ipv4.ProtocolNumber && len(pkt) > 20 && pkt[9] == tcpProtocolNumber {
		p.noteSYN(pkt) // keeps SYNs only
	}
	// Echo requests to anything but the gateway are answered from the host (icmp.go), never by the stack.
	if proto == ipv4.ProtocolNumber && len(pkt) > 20 && pkt[9] == icmpProtocolNumber &&
		!p.s.isGateway4([4]byte(pkt[16:20])) && p.takeEcho(pkt) {
		return nil
	}
	if proto == ipv6.ProtocolNumber && len(pkt) > 40 && pkt[6] == icmpv6ProtocolNumber && pkt[40] == 128 &&
		!p.s.isGateway(netip.AddrFrom16([16]byte(pkt[24:40]))) && p.takeEcho6(pkt) {
		return nil
	}
	if !checksumsValid(pkt) {
		p.s.stats.droppedMalformed.Add(1)
		return nil
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	held := false
	if burst {
		p.burstMu.Lock()
		// Only TCP segments with data are worth holding; anything else goes in at once unless segments are held,
		// which it must not overtake (GRO passes it on in order). The ACKs of a download are mostly this case.
		if p.burst != nil || hasTCPData(pkt) {
			if p.burst == nil {
				p.burst = p.s.gros.Get().(*gro.GRO)
			}
			pb.NetworkProtocolNumber = proto
			pb.RXChecksumValidated = true
			p.burst.Enqueue(pb) // takes its own reference when it holds the packet
			held = true
		}
		p.burstMu.Unlock()
	}
	if !held {
		p.s.link.InjectInbound(proto, pb)
	}
	pb.DecRef()
	return nil
}

// hasTCPData reports whether pkt is a TCP segment that carries data (IPv4 or IPv6 without extension headers).
func hasTCPData(pkt []byte) bool {
	var seg []byte
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		if pkt[9] != tcpProtocolNumber || len(pkt) < ihl+20 {
			return false
		}
		seg = pkt[ihl:]
	} else {
		if pkt[6] != tcpProtocolNumber || len(pkt) < 60 {
			return false
		}
		seg = pkt[40:]
	}
	return len(seg) > int(seg[12]>>4)*4
}

// peer returns the session holding dst when dst is another client's address, else nil.
func (p *port) peer(dst netip.Addr) *port {
	if key, ok := p.s.policy.Client(dst); ok {
		if q := p.s.lookup(key); q != nil && !q.closed.Load() {
			return q
		}
	}
	return nil
}

// track registers a flow's conns so that Close can end it; false if the port is already closed.
func (p *port) track(cs ...io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return false
	}
	for _, c := range cs {
		p.closers[c] = struct{}{}
	}
	return true
}

func (p *port) untrack(cs ...io.Closer) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.closers, c)
	}
	p.mu.Unlock()
}

// acquireFlow counts a new flow against the session's cap, the server's (MaxHostFlows) and the session's share of
// what other sessions leave free (limits.go).
func (p *port) acquireFlow() bool {
	s := p.s
	n, all := int(p.flows.Add(1)), int(s.flows.Add(1))
	if n > s.cfg.MaxFlowsPerSession {
		p.releaseFlow()
		s.stats.refusedLimit.Add(1)
		return false
	}
	if share := max(minFlowShare, (s.cfg.MaxHostFlows-(all-n))/2); all > s.cfg.MaxHostFlows || n > share {
		p.releaseFlow()
		p.refuseAbuse(&s.stats.refusedHostFlows, "flows over the session's share of the server's host sockets",
			"share", share, "server_flows", all-1, "max_host_flows", s.cfg.MaxHostFlows)
		return false
	}
	return true
}

func (p *port) releaseFlow() {
	p.flows.Add(-1)
	p.s.flows.Add(-1)
}

// Close detaches the session and ends its flows; it waits for their goroutines.
func (p *port) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.s.detach(p)
	p.EndBurst()
	p.mu.Lock()
	cs := p.closers
	p.closers = map[io.Closer]struct{}{}
	p.mu.Unlock()
	for c := range cs {
		c.Close()
	}
	p.wg.Wait()
	return nil
}
