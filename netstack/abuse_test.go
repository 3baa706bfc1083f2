package netstack

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

func dnsQuery(t *testing.T, id uint16) []byte {
	t.Helper()
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("localhost."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func dialDNS(t *testing.T, c *testClient) *gonet.UDPConn {
	t.Helper()
	uc, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(gateway.AsSlice()), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// TestDNSRateBounded: a session flooding the built-in DNS gets at most its burst and rate answered; the rest are
// dropped before any resolver work and counted, and another session is still answered.
func TestDNSRateBounded(t *testing.T) {
	s := newLimitStack(t, func(c *Config) { c.Policy = egress.Config{Allow: loopback} })
	c := attachClient(t, s, clientIP, nil)
	uc := dialDNS(t, c)
	const sent = 3 * dnsBurst
	start := time.Now()
	answered := make(chan int)
	go func() {
		b, n := make([]byte, 1500), 0
		for {
			uc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := uc.Read(b); err != nil {
				answered <- n
				return
			}
			n++
		}
	}()
	for i := range sent {
		if _, err := uc.Write(dnsQuery(t, uint16(i))); err != nil {
			t.Fatal(err)
		}
	}
	n := <-answered
	limit := dnsBurst + int(time.Since(start).Seconds()*dnsRate) + 1
	if n == 0 || n > limit {
		t.Fatalf("%d of %d queries answered, want 1..%d", n, sent, limit)
	}
	if st := s.Stats(); st.DNSRefused == 0 {
		t.Fatalf("no query counted as refused: %+v", st)
	}
	other := attachClient(t, s, clientB, func(ds *datapath.Session) { ds.ID = 2 })
	oc := dialDNS(t, other)
	oc.SetDeadline(time.Now().Add(5 * time.Second))
	oc.Write(dnsQuery(t, 7))
	if _, err := oc.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("another session's query: %v", err)
	}
}

// TestDNSFlowsBounded: while its queries wait for a silent upstream, a session holds at most maxDNSFlowsPerSession
// DNS flows; the next is dropped and counted.
func TestDNSFlowsBounded(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s := newLimitStack(t, func(c *Config) {
		c.Resolver = upstreamResolver([]netip.AddrPort{silent.LocalAddr().(*net.UDPAddr).AddrPort()})
	})
	c := attachClient(t, s, clientIP, nil)
	for i := range maxDNSFlowsPerSession + 1 {
		dialDNS(t, c).Write(dnsQuery(t, uint16(i)))
		if i < maxDNSFlowsPerSession {
			eventually(t, 5*time.Second, "the DNS flow to be taken", func() bool {
				return s.Stats().DNSQueries == uint64(i+1)
			})
		}
	}
	eventually(t, 5*time.Second, "the flow over the cap to be refused", func() bool { return s.Stats().DNSRefused == 1 })
	if q := s.Stats().DNSQueries; q != maxDNSFlowsPerSession {
		t.Fatalf("%d queries reached the resolver, want %d", q, maxDNSFlowsPerSession)
	}
}

// fakePinger answers echo requests to live at once and never answers others (a black hole: the slot is held
// until the request times out).
type fakePinger struct {
	live      netip.Addr
	answered  atomic.Int32
	blackhole atomic.Int32
}

func (f *fakePinger) String() string { return "fake" }

func (f *fakePinger) echo(ctx context.Context, dst netip.Addr, _, _ uint16, _ []byte) error {
	if dst == f.live {
		f.answered.Add(1)
		return nil
	}
	f.blackhole.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func echoRequest(src, dst netip.Addr, seq uint16) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+8)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(1)
	ic.SetSequence(seq)
	ic.SetChecksum(^checksum(ic))
	return pkt
}

// TestEchoFairShare: sessions pinging black holes as fast as they can take no more than their share of the
// server's echo slots, and another session's ping to a live host is answered every time.
func TestEchoFairShare(t *testing.T) {
	live, dead := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	s := newLimitStack(t, nil)
	f := &fakePinger{live: live}
	s.pinger = f
	const flooders = 12
	for i := range flooders {
		ip := netip.AddrFrom4([4]byte{10, 250, 77, byte(20 + i)})
		port, err := s.Attach(&datapath.Session{ID: uint64(10 + i), User: "flood", Addrs: []netip.Addr{ip}, MTU: 1500, Deliver: func([]byte) {}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { port.Close() })
		for seq := range 40 {
			port.Send(echoRequest(ip, dead, uint16(seq)))
		}
	}
	if held := s.echoInFlight.Load(); held > maxEchoServer-flooders/2 {
		t.Fatalf("%d slots held by %d sessions, want at most %d", held, flooders, maxEchoServer-flooders/2)
	}
	eventually(t, 5*time.Second, "the flood to reach the pinger", func() bool { return f.blackhole.Load() == s.echoInFlight.Load() })
	if s.Stats().EchoRefused == 0 {
		t.Fatal("the flood was not refused")
	}
	victim := netip.MustParseAddr("10.250.77.99")
	replies := make(chan struct{}, 100)
	vp, err := s.Attach(&datapath.Session{ID: 99, User: "victim", Addrs: []netip.Addr{victim}, MTU: 1500,
		Deliver: func(pkt []byte) {
			if len(pkt) > header.IPv4MinimumSize && header.ICMPv4(pkt[header.IPv4MinimumSize:]).Type() == header.ICMPv4EchoReply {
				replies <- struct{}{}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vp.Close() })
	for seq := range 20 {
		// One at a time, as ping does: while the server is this full, a session's second echo in flight is refused.
		eventually(t, 2*time.Second, "the victim's previous echo to end", func() bool { return vp.(*port).echoes.Load() == 0 })
		vp.Send(echoRequest(victim, live, uint16(seq)))
		select {
		case <-replies:
		case <-time.After(2 * time.Second):
			t.Fatalf("echo %d of the victim to a live host unanswered while %d sessions flood (%d slots held)", seq, flooders, s.echoInFlight.Load())
		}
	}
}

// TestDNSPTRFiltered: a PTR query for an address the user may not reach (the host's loopback) gets an empty
// answer, as an A query for it would; with egress_allow naming it, the host's name for it is answered.
func TestDNSPTRFiltered(t *testing.T) {
	ptr := func(s *Stack) dnsmessage.Message {
		t.Helper()
		c := attachClient(t, s, clientIP, nil)
		uc := dialDNS(t, c)
		return exchangeDNS(t, uc, dnsmessage.Message{Header: dnsmessage.Header{ID: 9, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("1.0.0.127.in-addr.arpa."), Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET}}})
	}
	denied := newLimitStack(t, func(c *Config) { c.Policy = egress.Config{} })
	if r := ptr(denied); len(r.Answers) != 0 || r.RCode != dnsmessage.RCodeSuccess || denied.Stats().DNSFiltered != 1 {
		t.Fatalf("PTR for 127.0.0.1 without egress_allow: %v rcode %v, %d filtered; want no answer, NOERROR, 1", r.Answers, r.RCode, denied.Stats().DNSFiltered)
	}
	if r := ptr(newLimitStack(t, nil)); len(r.Answers) == 0 {
		t.Fatalf("PTR for 127.0.0.1 with egress_allow: no answer (rcode %v)", r.RCode)
	}
}

// TestHostFlowsShared: with the server's host sockets bounded (MaxHostFlows), a session at its limit holds at most
// half of the budget, and a second session can still open flows.
func TestHostFlowsShared(t *testing.T) {
	const budget = 40
	s := newLimitStack(t, func(c *Config) { c.MaxHostFlows = budget })
	a, b := attachClient(t, s, clientIP, nil), attachClient(t, s, clientB, func(ds *datapath.Session) { ds.ID = 2 })
	echo := echoServer(t)
	open := func(c *testClient, max int) int {
		t.Helper()
		for i := range max {
			conn, err := c.dial(t, echo)
			if err != nil {
				if !refused(err) {
					t.Fatalf("dial %d: %v, want a refusal", i+1, err)
				}
				return i
			}
			t.Cleanup(func() { conn.Close() })
		}
		return max
	}
	if n := open(a, budget); n != budget/2 {
		t.Fatalf("session A opened %d flows, want half the budget, %d", n, budget/2)
	}
	if n := open(b, budget); n != minFlowShare {
		t.Fatalf("session B opened %d flows while A held half, want %d", n, minFlowShare)
	}
	if st := s.Stats(); st.RefusedHostFlows != 2 || st.RefusedLimit != 0 {
		t.Fatalf("stats %+v: want 2 refused by the host budget", st)
	}
}

// panicDialer panics when asked for port 9 and dials for real otherwise.
type panicDialer struct{ net.Dialer }

func (d *panicDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Port() == 9 {
		panic("dialer bug")
	}
	return d.Dialer.DialContext(ctx, network, addr)
}

// TestFlowPanicContained: a panic while handling one flow loses that flow only; the stack serves the next.
func TestFlowPanicContained(t *testing.T) {
	s := newLimitStack(t, func(c *Config) { c.Dialer = &panicDialer{} })
	c := attachClient(t, s, clientIP, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if conn, err := gonet.DialContextTCP(ctx, c.st, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{127, 0, 0, 1}), Port: 9}, ipv4.ProtocolNumber); err == nil {
		conn.Close()
		t.Fatal("the flow whose handler panicked was connected")
	}
	conn, err := c.dial(t, echoServer(t))
	if err != nil {
		t.Fatalf("the next flow: %v", err)
	}
	conn.Close()
}

// exchangeDNS sends q on uc and returns the answer.
func exchangeDNS(t *testing.T, uc net.Conn, q dnsmessage.Message) dnsmessage.Message {
	t.Helper()
	msg, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write(msg)
	b := make([]byte, 1500)
	n, err := uc.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	var r dnsmessage.Message
	if err := r.Unpack(b[:n]); err != nil {
		t.Fatal(err)
	}
	return r
}
