// Package netstack is ocgate's rootless data path: one in-process gVisor TCP/IP stack for the whole server. Client
// packets are injected into it (link.go); it terminates their TCP and UDP flows (tcp.go, udp.go) and re-originates
// them from the host's own sockets through package egress, after the egress policy allowed the destination. The
// server's own in-pool address (the gateway) answers ICMP echo and DNS (dns.go).
package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gvlog "gvisor.dev/gvisor/pkg/log"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// Config configures the stack. Gateway is required.
type Config struct {
	// Gateway is the server's own in-pool address: it answers ICMP echo, and DNS when ServeDNS is set.
	Gateway netip.Addr
	// Pool is the client address pool. Flows towards other pool addresses are not sent to the host.
	Pool netip.Prefix
	// Gateway6 and Pool6 are the IPv6 counterparts (invalid: no IPv6 inside the tunnel).
	Gateway6 netip.Addr
	Pool6    netip.Prefix
	// UserPools are more client networks, IPv4 or IPv6 (ipv4_network, ipv6_network in per-user and per-group
	// files): the server's address in each is its first usable one, a gateway like Gateway (echo, DNS).
	UserPools []netip.Prefix
	// ServeDNS answers DNS (UDP and TCP port 53) at Gateway by resolving with Resolver.
	ServeDNS bool
	// Resolver resolves DNS queries; nil means Upstream's servers, or net.DefaultResolver (the host's resolver)
	// when there are none.
	Resolver *net.Resolver
	// FlowLog receives one JSON line per ended or refused TCP/UDP flow (flowlog.go); nil = off.
	FlowLog io.Writer
	// Upstream are DNS servers (dns_upstream) the built-in resolver asks, in order, instead of the host's.
	Upstream []netip.AddrPort
	// Policy is the egress policy's allow and deny lists (egress_allow, egress_deny); New adds the pools, the
	// gateways and HostSockets: the stack re-originates flows from the host's sockets. Without HostAddrs, New
	// watches the host's own addresses itself (refused unless egress_allow names them).
	Policy egress.Config
	// Dialer opens host connections; nil means egress.NewDialer with the policy.
	Dialer egress.Dialer
	// MTU is the largest packet the stack sends or accepts; 0 means 1500.
	MTU int
	// UDPIdleTimeout closes a UDP flow after this much silence; 0 means 60 s.
	UDPIdleTimeout time.Duration
	// MaxFlowsPerSession caps a session's concurrent TCP and UDP flows; 0 means 1024. New flows over the cap are
	// refused (RST for TCP, dropped for UDP) and counted.
	MaxFlowsPerSession int
	// MaxHostFlows caps the TCP and UDP flows of all sessions together, each of which holds a host socket; 0 means
	// three quarters of the open-file limit (RLIMIT_NOFILE, whose soft value Go raises to the hard one at start),
	// keeping the rest for listeners, logins and the server's own files. A session also holds at most half of what
	// other sessions leave free (at least minFlowShare), so one user at their caps cannot starve the others.
	MaxHostFlows int
	// MaxHalfOpenPerSession caps a session's TCP flows being opened (the host-side dial, then the client's
	// handshake); 0 means 64. MaxDialsInFlight caps the host-side TCP dials of the whole server; 0 means 1024. New
	// flows over either cap are reset and counted (limits.go).
	MaxHalfOpenPerSession, MaxDialsInFlight int
	// TCPKeepalive is the idle time before keepalive probes on the host side of TCP flows, which are then sent
	// TCPKeepalive apart, 4 at most; 0 means 30 s, negative means no keepalive.
	TCPKeepalive time.Duration
	// ICMP is how echo requests to the world are re-originated: "auto" (or ""), "socket", "raw", "exec" or
	// "off" (see icmp.go).
	ICMP string
	// Logger receives flow refusals (Debug) and errors; nil means slog.Default().
	Logger *slog.Logger
}

// Stats are cumulative counters.
type Stats struct {
	PacketsIn, PacketsOut            uint64 // from clients / to clients
	DroppedSpoofed, DroppedMalformed uint64 // client packets with a foreign source / that do not parse
	DroppedNoSession                 uint64 // packets the stack sent to an address no session holds
	Switched, DeniedClientToClient   uint64 // client-to-client packets switched / refused by client_to_client
	RefusedPolicy, RefusedLimit      uint64 // flows refused by the egress policy / by the per-session cap
	TCPDialFailed                    uint64
	TCPFlows, UDPFlows, DNSQueries   uint64
	EchoAnswered, EchoLost           uint64 // echo requests re-originated from the host: answered / not
	DNSFiltered                      uint64 // addresses left out of DNS answers because the user may not reach them
	ICMPErrors                       uint64 // ICMP unreachable sent to clients for host-side failures
	RefusedHalfOpen, RefusedDials    uint64 // TCP flows refused by the per-session half-open cap / the dial cap
	RefusedPorts                     uint64 // flows and client-to-client packets refused by restrict_user_to_ports
	RefusedHostFlows                 uint64 // flows refused by MaxHostFlows or the session's share of it
	DNSRefused, EchoRefused          uint64 // DNS queries and flows, ICMP echo requests refused by the per-session bounds (abuse.go)
}

type counters struct {
	packetsIn, packetsOut, droppedSpoofed, droppedMalformed, droppedNoSession  atomic.Uint64
	refusedPolicy, refusedLimit, tcpDialFailed, tcpFlows, udpFlows, dnsQueries atomic.Uint64
	switched, deniedClientToClient, echoAnswered, echoLost, dnsFiltered        atomic.Uint64
	icmpErrors                                                                 atomic.Uint64
	refusedHalfOpen, refusedDials, refusedPorts                                atomic.Uint64
	dnsRefused, echoRefused, refusedHostFlows                                  atomic.Uint64
}

// Stack is the netstack data path. It implements datapath.Datapath.
type Stack struct {
	cfg    Config
	log    *slog.Logger
	stack  *stack.Stack
	link   *link
	gros   sync.Pool // *gro.GRO for the ports' bursts (link.go)
	dialer egress.Dialer
	policy *egress.Policy
	// hostAddrs watches the host's addresses for the policy when the Config named none (closed with the stack).
	hostAddrs *egress.HostAddrs
	pinger    pinger          // nil: echo requests to the world are dropped
	gateways  []netip.Addr    // the server's in-pool addresses: Gateway, Gateway6 and the UserPools' (isGateway)
	gw4       [][4]byte       // the IPv4 ones, as the packet path compares them
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	stats     counters
	dials     atomic.Int32 // host-side TCP dials in progress (MaxDialsInFlight)
	flows     atomic.Int32 // live TCP and UDP flows of all sessions (MaxHostFlows)
	// echoInFlight counts the echo requests re-originated from the host and not yet answered; echoers the
	// sessions that have at least one (icmp.go: echoSlot).
	echoInFlight, echoers atomic.Int32

	flowMu sync.Mutex // serialises flow log lines
	mu     sync.Mutex // serialises changes of ports
	// ports maps a client address to its session. Read per packet without locks; a sync.Map rather than a
	// copy-on-write snapshot, which made each attach cost a copy of every session's entry (quadratic setup).
	ports  sync.Map // netip.Addr → *port
	closed bool     // guarded by mu
	wg     sync.WaitGroup
}

var _ datapath.Datapath = (*Stack)(nil)

const nicID tcpip.NICID = 1

var gvlogOnce sync.Once

// gvisorLog sends gVisor's own (process-wide) log lines to our logger at debug level.
type gvisorLog struct{ l *slog.Logger }

func (g gvisorLog) Emit(_ int, _ gvlog.Level, _ time.Time, format string, v ...any) {
	g.l.Debug("gvisor: " + fmt.Sprintf(format, v...))
}

// New builds the stack.
func New(cfg Config) (*Stack, error) {
	if !cfg.Gateway.IsValid() {
		return nil, errors.New("netstack: Gateway is required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.UDPIdleTimeout == 0 {
		cfg.UDPIdleTimeout = 60 * time.Second
	}
	if cfg.MaxFlowsPerSession == 0 {
		cfg.MaxFlowsPerSession = 1024
	}
	if cfg.MaxHostFlows == 0 {
		cfg.MaxHostFlows = hostFlowBudget()
	}
	if cfg.MaxHalfOpenPerSession == 0 {
		cfg.MaxHalfOpenPerSession = 64
	}
	if cfg.MaxDialsInFlight == 0 {
		cfg.MaxDialsInFlight = 1024
	}
	if cfg.TCPKeepalive == 0 {
		cfg.TCPKeepalive = 30 * time.Second
	}
	if cfg.Resolver == nil && len(cfg.Upstream) > 0 {
		cfg.Resolver = upstreamResolver(cfg.Upstream)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	gateways := []netip.Addr{cfg.Gateway}
	if cfg.Gateway6.IsValid() {
		gateways = append(gateways, cfg.Gateway6)
	}
	for _, n := range cfg.UserPools {
		gateways = append(gateways, n.Masked().Addr().Next())
	}
	cfg.Policy.Pools = append([]netip.Prefix{cfg.Pool, cfg.Pool6}, cfg.UserPools...)
	cfg.Policy.ClientBits6 = 128 // sessions are looked up by their exact addresses (Stack.lookup)
	cfg.Policy.Gateways = gateways
	cfg.Policy.HostSockets = true
	var hostAddrs *egress.HostAddrs // ours to close
	if cfg.Policy.HostAddrs == nil {
		hostAddrs = egress.NewHostAddrs()
		cfg.Policy.HostAddrs = hostAddrs
	}
	policy := egress.NewPolicy(cfg.Policy)
	if cfg.Dialer == nil {
		cfg.Dialer = egress.NewDialer(policy)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	gvlogOnce.Do(func() { gvlog.SetTarget(gvisorLog{cfg.Logger}) })
	s := &Stack{cfg: cfg, log: cfg.Logger, dialer: cfg.Dialer, policy: policy, hostAddrs: hostAddrs}
	s.gateways = gateways
	for _, g := range gateways {
		if g.Is4() {
			s.gw4 = append(s.gw4, g.As4())
		}
	}
	var err error
	if s.pinger, err = newPinger(cfg.ICMP); err != nil {
		if cfg.ICMP != "" && cfg.ICMP != "auto" {
			hostAddrs.Close()
			return nil, err
		}
		s.log.Warn("ICMP echo to destinations beyond the gateway will go unanswered", "err", err)
	} else if s.pinger != nil {
		s.log.Info("ICMP echo re-originated with the " + s.pinger.String())
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// Step 1: a stack with IPv4/IPv6, TCP, UDP and ICMP. Packets for loopback addresses are accepted ("martian"
	// to gVisor) so that they reach the forwarders, where the egress policy refuses them with a reset unless
	// egress_allow names them; gVisor would otherwise drop them silently and the client would wait for a timeout.
	s.stack = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	fail := func(step string, err tcpip.Error) (*Stack, error) {
		s.stack.Close()
		hostAddrs.Close()
		return nil, fmt.Errorf("netstack: %s: %s", step, err)
	}
	// Step 2: TCP with SACK, so that a lost segment on the client's path costs one retransmission, not a window.
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enabling SACK", err)
	}
	// Step 2a: no RACK loss detection. With it, an iperf3 download through the DTLS fast path stalled at
	// ~2 Mbit/s in 2 of 12 runs (upload 8 s, then download 8 s, stock client on a real TUN); without it, 0 of 32
	// at the same throughput. Tailscale turned it off too (tailscale#9707). SACK recovery (RFC 6675) remains.
	recovery := tcpip.TCPRecovery(0)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &recovery); err != nil {
		return fail("disabling RACK", err)
	}
	// Step 2b: a one-second TIME_WAIT. Clients reuse ports (ocproxy's lwIP restarts from the same port after a
	// reconnect), and a SYN whose sequence number is not above the old connection's is swallowed by a TIME_WAIT
	// endpoint: with gVisor's default 60 s, a user's first connection after a reconnect hung. The tunnel does not
	// reorder by seconds, so the old connection's strays cannot outlive this.
	tw := tcpip.TCPTimeWaitTimeoutOption(time.Second)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &tw); err != nil {
		return fail("setting TIME_WAIT", err)
	}
	// Step 2c: CUBIC congestion control, as the Linux kernel uses (and so ocserv's path, whose TCP is the host's),
	// instead of gVisor's default Reno, which regrows its window by one segment per round trip after a loss: a
	// download towards a client that drops a burst (openconnect's UDP socket buffer) stayed slow for the rest of
	// the run. See the commit that set it for the A/B.
	cc := tcpip.CongestionControlOption("cubic")
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &cc); err != nil {
		return fail("choosing CUBIC", err)
	}
	// Step 3: one NIC whose link endpoint hands packets to sessions (link.go).
	s.link = newLink(s, uint32(cfg.MTU))
	s.gros.New = s.link.newGRO
	if err := s.stack.CreateNIC(nicID, s.link); err != nil {
		return fail("creating the NIC", err)
	}
	// Step 4: promiscuous mode makes the NIC accept packets for any destination (every address on the
	// Internet is "local" to the forwarders); spoofing lets the stack answer from those addresses.
	if err := s.stack.SetPromiscuousMode(nicID, true); err != nil {
		return fail("enabling promiscuous mode", err)
	}
	if err := s.stack.SetSpoofing(nicID, true); err != nil {
		return fail("enabling spoofing", err)
	}
	// Step 5: the gateways are real addresses of the NIC, so ICMP echo to them is answered by the stack.
	for _, g := range gateways {
		gw := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddrFromSlice(g.AsSlice()).WithPrefix()}
		if g.Is6() {
			gw.Protocol = ipv6.ProtocolNumber
		}
		if err := s.stack.AddProtocolAddress(nicID, gw, stack.AddressProperties{}); err != nil {
			return fail("adding the gateway address "+g.String(), err)
		}
	}
	// Step 6: everything routes to the NIC (replies go back to the session that owns the destination).
	s.stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	// Step 7: forwarders terminate the flows nobody listens for (all of them but DNS on the gateway).
	// Beyond its in-flight limit (requests from the SYN until handleTCP completes them) the forwarder drops SYNs
	// silently: twice the dial cap leaves room for the clients' handshakes and for the resets of refused flows.
	tcpFwd := tcp.NewForwarder(s.stack, 0, max(2*cfg.MaxDialsInFlight, 1024), s.handleTCP)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s.stack, s.handleUDP)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	return s, nil
}

// Stats returns the counters.
func (s *Stack) Stats() Stats {
	c := &s.stats
	return Stats{
		PacketsIn: c.packetsIn.Load(), PacketsOut: c.packetsOut.Load(),
		DroppedSpoofed: c.droppedSpoofed.Load(), DroppedMalformed: c.droppedMalformed.Load(),
		DroppedNoSession: c.droppedNoSession.Load(), RefusedPolicy: c.refusedPolicy.Load(),
		RefusedLimit: c.refusedLimit.Load(), TCPDialFailed: c.tcpDialFailed.Load(),
		TCPFlows: c.tcpFlows.Load(), UDPFlows: c.udpFlows.Load(), DNSQueries: c.dnsQueries.Load(),
		Switched: c.switched.Load(), DeniedClientToClient: c.deniedClientToClient.Load(),
		EchoAnswered: c.echoAnswered.Load(), EchoLost: c.echoLost.Load(), DNSFiltered: c.dnsFiltered.Load(),
		ICMPErrors:      c.icmpErrors.Load(),
		RefusedHalfOpen: c.refusedHalfOpen.Load(), RefusedDials: c.refusedDials.Load(), RefusedPorts: c.refusedPorts.Load(),
		DNSRefused: c.dnsRefused.Load(), EchoRefused: c.echoRefused.Load(), RefusedHostFlows: c.refusedHostFlows.Load(),
	}
}

// Attach connects a session (see datapath.Datapath).
func (s *Stack) Attach(sess *datapath.Session) (datapath.Port, error) {
	if len(sess.Addrs) == 0 || sess.Deliver == nil {
		return nil, errors.New("netstack: session without address or Deliver")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("netstack: closed")
	}
	for _, a := range sess.Addrs {
		if _, dup := s.ports.Load(a); dup {
			return nil, fmt.Errorf("netstack: address %s already attached", a)
		}
	}
	p := newPort(s, sess)
	for _, a := range sess.Addrs {
		s.ports.Store(a, p)
	}
	return p, nil
}

func (s *Stack) detach(p *port) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range p.sess.Addrs {
		s.ports.CompareAndDelete(a, p)
	}
}

// isGateway reports whether a is one of the server's in-pool addresses.
func (s *Stack) isGateway(a netip.Addr) bool { return slices.Contains(s.gateways, a) }

// isGateway4 is isGateway for an IPv4 address as the packet path holds it.
func (s *Stack) isGateway4(a [4]byte) bool { return slices.Contains(s.gw4, a) }

// lookup finds the session holding address a, without locks.
func (s *Stack) lookup(a netip.Addr) *port {
	if v, ok := s.ports.Load(a); ok {
		return v.(*port)
	}
	return nil
}

// Close closes every port, the stack, and waits for the flows' goroutines.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.ports.Range(func(_, v any) bool {
		v.(*port).Close()
		return true
	})
	s.cancel()
	s.wg.Wait()
	s.stack.Close()
	s.stack.Wait()
	s.hostAddrs.Close()
	return nil
}
