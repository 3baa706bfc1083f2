package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// newLimitStack is a test stack: loopback reachable, cfg adjusted by mod.
func newLimitStack(t testing.TB, mod func(*Config)) *Stack {
	t.Helper()
	cfg := Config{Gateway: gateway, Pool: netip.MustParsePrefix("10.250.77.0/24"), ServeDNS: true,
		Policy: egress.Config{Allow: loopback}, Logger: slog.New(slog.DiscardHandler), UDPIdleTimeout: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// attachClient attaches a session at ip, played by a client gVisor stack of its own: what the client sends goes
// into the Port, what the server delivers is injected into it; mod adjusts the session.
func attachClient(t *testing.T, s *Stack, ip netip.Addr, mod func(*datapath.Session)) *testClient {
	t.Helper()
	return attachClientSending(t, s, ip, mod, false)
}

// attachClientSending is attachClient whose packets go in as bursts (SendBurst) when burst is set: a burst ends
// when the client has nothing more queued, as the DTLS reader's ends with its recvmmsg batch.
func attachClientSending(t *testing.T, s *Stack, ip netip.Addr, mod func(*datapath.Session), burst bool) *testClient {
	t.Helper()
	c := &testClient{ep: channel.New(1024, 1500, "")}
	c.st = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true})},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	c.st.CreateNIC(1, c.ep)
	c.st.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFromSlice(ip.AsSlice()).WithPrefix()}, stack.AddressProperties{})
	c.st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	sess := &datapath.Session{ID: 1, User: ip.String(), Addrs: []netip.Addr{ip}, MTU: 1500,
		Deliver: func(pkt []byte) {
			pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
			c.ep.InjectInbound(ipv4.ProtocolNumber, pb)
			pb.DecRef()
		}}
	if mod != nil {
		mod(sess)
	}
	var err error
	if c.port, err = s.Attach(sess); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			pkt := c.ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			if burst {
				b := c.port.(datapath.Burster)
				b.SendBurst(v.AsSlice())
				if c.ep.NumQueued() == 0 {
					b.EndBurst()
				}
			} else {
				c.port.Send(v.AsSlice())
			}
			v.Release()
			pkt.DecRef()
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		c.port.Close()
		c.st.Close()
	})
	return c
}

var clientB = netip.MustParseAddr("10.250.77.6")

func refused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "refused"))
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestFlowCap: a session at its flow cap gets resets for new connections while another session is unaffected,
// and gets new ones again once a flow ends.
func TestFlowCap(t *testing.T) {
	s := newLimitStack(t, func(c *Config) { c.MaxFlowsPerSession = 4 })
	a, b := attachClient(t, s, clientIP, nil), attachClient(t, s, clientB, nil)
	echo := echoServer(t)
	var held []*gonet.TCPConn
	for i := range 4 {
		conn, err := a.dial(t, echo)
		if err != nil {
			t.Fatalf("A's connection %d: %v", i+1, err)
		}
		defer conn.Close()
		held = append(held, conn)
	}
	start := time.Now()
	if _, err := a.dial(t, echo); !refused(err) {
		t.Fatalf("A's fifth connection: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %s; a reset is immediate", d)
	}
	conn, err := b.dial(t, echo)
	if err != nil {
		t.Fatalf("B while A is at its cap: %v", err)
	}
	conn.Write([]byte("b"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(conn, buf); err != nil || buf[0] != 'b' {
		t.Fatalf("B's echo: %q %v", buf, err)
	}
	conn.Close()
	// A flow is counted by its handler goroutine once the stack's side of the handshake is over, which on a busy
	// machine may come after the client's dial returned.
	eventually(t, 5*time.Second, "5 flows counted", func() bool { return s.Stats().TCPFlows == 5 })
	if st := s.Stats(); st.RefusedLimit != 1 || st.TCPFlows != 5 {
		t.Fatalf("stats %+v: want 1 refusal, 5 flows", st)
	}
	held[0].Close()
	eventually(t, 5*time.Second, "A's flow count to drop", func() bool { return a.port.(*port).flows.Load() == 3 })
	if conn, err := a.dial(t, echo); err != nil {
		t.Fatalf("A after one of its flows ended: %v", err)
	} else {
		conn.Close()
	}
}

// gateDialer holds the dials to port block until release is closed (then refuses them); others dial for real.
type gateDialer struct {
	block   uint16
	started chan struct{}
	release chan struct{}
	net.Dialer
}

func newGateDialer() *gateDialer {
	return &gateDialer{block: 9, started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gateDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Port() == g.block {
		g.started <- struct{}{}
		select {
		case <-g.release:
			return nil, syscall.ECONNREFUSED
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Dialer.DialContext(ctx, network, addr)
}

// dialAsync dials in the background; the channel gets the result.
func dialAsync(t *testing.T, c *testClient, dst netip.AddrPort) chan error {
	ch := make(chan error, 1)
	go func() {
		conn, err := c.dial(t, dst)
		if conn != nil {
			conn.Close()
		}
		ch <- err
	}()
	return ch
}

// TestHalfOpenCap: a session with max_half_open_per_session connections still being opened gets a reset for the
// next one at once, while another session still opens its own.
func TestHalfOpenCap(t *testing.T) {
	g := newGateDialer()
	s := newLimitStack(t, func(c *Config) { c.MaxHalfOpenPerSession = 2; c.Dialer = g })
	a, b := attachClient(t, s, clientIP, nil), attachClient(t, s, clientB, nil)
	slow := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), g.block)
	pending := []chan error{dialAsync(t, a, slow), dialAsync(t, a, slow)}
	for range 2 {
		select {
		case <-g.started:
		case <-time.After(5 * time.Second):
			t.Fatal("the first two dials did not reach the dialer")
		}
	}
	if _, err := a.dial(t, slow); !refused(err) {
		t.Fatalf("A's third half-open connection: %v, want connection refused", err)
	}
	bDone := dialAsync(t, b, slow) // B's own half-open count is 0
	select {
	case <-g.started:
	case <-time.After(5 * time.Second):
		t.Fatal("B's dial did not reach the dialer")
	}
	close(g.release)
	for _, ch := range append(pending, bDone) {
		if err := <-ch; !refused(err) {
			t.Errorf("released dial: %v, want the destination's refusal", err)
		}
	}
	if st := s.Stats(); st.RefusedHalfOpen != 1 || st.RefusedDials != 0 || st.TCPDialFailed != 3 {
		t.Fatalf("stats %+v: want 1 half-open refusal, 3 failed dials", st)
	}
	eventually(t, 5*time.Second, "the counts to return to zero", func() bool {
		return a.port.(*port).syns.Load() == 0 && b.port.(*port).syns.Load() == 0 && s.dials.Load() == 0 &&
			a.port.(*port).flows.Load() == 0
	})
}

// TestDialsInFlightCap: with max_dials_in_flight dials in progress on the server, any session's next TCP flow is
// reset.
func TestDialsInFlightCap(t *testing.T) {
	g := newGateDialer()
	s := newLimitStack(t, func(c *Config) { c.MaxDialsInFlight = 2; c.Dialer = g })
	a, b := attachClient(t, s, clientIP, nil), attachClient(t, s, clientB, nil)
	slow := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), g.block)
	pending := []chan error{dialAsync(t, a, slow), dialAsync(t, a, slow)}
	for range 2 {
		<-g.started
	}
	if _, err := b.dial(t, echoServer(t)); !refused(err) {
		t.Fatalf("B's connection while the server has 2 dials in flight: %v, want connection refused", err)
	}
	close(g.release)
	for _, ch := range pending {
		<-ch
	}
	if st := s.Stats(); st.RefusedDials != 1 || st.RefusedHalfOpen != 0 {
		t.Fatalf("stats %+v: want 1 dial-cap refusal", st)
	}
	if conn, err := b.dial(t, echoServer(t)); err != nil {
		t.Fatalf("B once the dials are over: %v", err)
	} else {
		conn.Close()
	}
}

// TestRestrictPorts: restrict_user_to_ports (here "tcp(P)") lets TCP to P through, resets TCP to another port,
// drops UDP, answers ICMP echo with administratively prohibited, and leaves DNS at the gateway alone.
func TestRestrictPorts(t *testing.T) {
	s := newLimitStack(t, nil)
	ok, other := echoServer(t), echoServer(t)
	c := attachClient(t, s, clientIP, func(sess *datapath.Session) {
		sess.Ports = datapath.PortRules{Rules: []datapath.PortRule{{Proto: tcpProtocolNumber, Port: ok.Port()}}}
	})
	conn, err := c.dial(t, ok)
	if err != nil {
		t.Fatalf("allowed port: %v", err)
	}
	conn.Close()
	if _, err := c.dial(t, other); !refused(err) {
		t.Fatalf("another port: %v, want connection refused", err)
	}
	// UDP to a refused port: no flow, no answer.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := netip.MustParseAddrPort(pc.LocalAddr().String())
	uc, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("ping"))
	eventually(t, 5*time.Second, "the UDP refusal", func() bool { return s.Stats().RefusedPorts == 2 })
	pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := pc.ReadFrom(make([]byte, 10)); err == nil {
		t.Fatalf("the refused UDP port received %d bytes", n)
	}
	// DNS at the gateway is not asked about.
	g, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(gateway.AsSlice()), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("localhost."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, _ := q.Pack()
	g.SetDeadline(time.Now().Add(5 * time.Second))
	g.Write(msg)
	if _, err := g.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("DNS at the gateway: %v", err)
	}
	if st := s.Stats(); st.RefusedPorts != 2 || st.TCPFlows != 1 || st.UDPFlows != 1 {
		t.Fatalf("stats %+v: want 2 port refusals, 1 TCP flow, 1 UDP flow (DNS)", st)
	}
}

// TestRestrictPortsICMPAndSwitched: a refused echo request is answered with ICMP administratively prohibited, and
// a client-to-client packet to a refused port is not switched.
func TestRestrictPortsICMPAndSwitched(t *testing.T) {
	s := newLimitStack(t, func(c *Config) { c.Policy = egress.Config{}; c.ICMP = "off" })
	var mu sync.Mutex
	var toA [][]byte
	toB := 0
	onlyTCP443 := datapath.PortRules{Rules: []datapath.PortRule{{Proto: tcpProtocolNumber, Port: 443}}}
	pa, err := s.Attach(&datapath.Session{Addrs: []netip.Addr{clientIP}, MTU: 1500, ClientToClient: true, Ports: onlyTCP443,
		Deliver: func(pkt []byte) { mu.Lock(); toA = append(toA, append([]byte(nil), pkt...)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Attach(&datapath.Session{Addrs: []netip.Addr{clientB}, MTU: 1500, ClientToClient: true,
		Deliver: func([]byte) { mu.Lock(); toB++; mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	ipPacket := func(dst netip.Addr, proto uint8, l4 []byte) []byte {
		pkt := make([]byte, header.IPv4MinimumSize+len(l4))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: proto,
			SrcAddr: tcpip.AddrFromSlice(clientIP.AsSlice()), DstAddr: tcpip.AddrFromSlice(dst.AsSlice())})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(pkt[header.IPv4MinimumSize:], l4)
		return pkt
	}
	echo := make([]byte, header.ICMPv4MinimumSize+8)
	ic := header.ICMPv4(echo)
	ic.SetType(header.ICMPv4Echo)
	ic.SetChecksum(^checksumOf(echo))
	pa.Send(ipPacket(netip.MustParseAddr("192.0.2.1"), 1, echo))
	mu.Lock()
	if len(toA) != 1 || header.IPv4(toA[0]).Protocol() != 1 || header.ICMPv4(toA[0][20:]).Type() != header.ICMPv4DstUnreachable ||
		header.ICMPv4(toA[0][20:]).Code() != header.ICMPv4AdminProhibited {
		t.Errorf("answer to a refused echo request: %x, want ICMP administratively prohibited", toA)
	}
	mu.Unlock()
	udpTo := func(port uint16) []byte { return []byte{0x9c, 0x40, byte(port >> 8), byte(port), 0, 8, 0, 0} }
	tcpTo := func(port uint16) []byte {
		b := make([]byte, 20)
		copy(b, udpTo(port)[:4])
		b[12], b[13] = 5<<4, 0x02 // SYN
		return b
	}
	pa.Send(ipPacket(clientB, 17, udpTo(443))) // UDP: refused
	pa.Send(ipPacket(clientB, 6, tcpTo(22)))   // TCP to 22: refused
	pa.Send(ipPacket(clientB, 6, tcpTo(443)))  // switched
	mu.Lock()
	defer mu.Unlock()
	if toB != 1 {
		t.Errorf("B got %d packets, want the one to tcp/443", toB)
	}
	if st := s.Stats(); st.RefusedPorts != 3 || st.Switched != 1 {
		t.Errorf("stats %+v: want 3 port refusals (echo, UDP, TCP 22), 1 switched", st)
	}
}
