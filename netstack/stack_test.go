package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

var (
	gateway  = netip.MustParseAddr("10.250.77.1")
	clientIP = netip.MustParseAddr("10.250.77.5")
)

// testClient is a second gVisor stack playing the VPN client: what it sends goes into the Port, what the server
// stack delivers is injected into it.
type testClient struct {
	st   *stack.Stack
	ep   *channel.Endpoint
	port datapath.Port
}

// newTestStack is a stack whose egress policy allows allow, with the test client attached at clientIP and given
// routes.
func newTestStack(t *testing.T, allow []netip.Prefix, routes []netip.Prefix) (*Stack, *testClient) {
	t.Helper()
	s := newLimitStack(t, func(c *Config) { c.Policy = egress.Config{Allow: allow} })
	c := attachClient(t, s, clientIP, func(sess *datapath.Session) { sess.User, sess.Routes = "t", routes })
	return s, c
}

func (c *testClient) dial(t *testing.T, dst netip.AddrPort) (*gonet.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, c.st, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}, ipv4.ProtocolNumber)
}

func echoServer(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// echoRoundTrip sends n random bytes from the client through the stack to an echo server on the host, and checks
// that they come back.
func echoRoundTrip(t *testing.T, c *testClient, n int) {
	t.Helper()
	conn, err := c.dial(t, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data := make([]byte, n)
	rand.Read(data)
	go func() { conn.Write(data); conn.CloseWrite() }()
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo: %d bytes back, %v", len(got), err)
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func TestTCPRoundTrip(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	echoRoundTrip(t, c, 4<<20)
	if st := s.Stats(); st.TCPFlows != 1 || st.PacketsIn == 0 || st.PacketsOut == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTCPRefusedAndDenied(t *testing.T) {
	s, c := newTestStack(t, loopback, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	for _, dst := range []netip.AddrPort{closed, netip.MustParseAddrPort("192.0.2.1:80"), netip.MustParseAddrPort("10.250.77.9:22")} {
		start := time.Now()
		_, err := c.dial(t, dst)
		if !errors.Is(err, syscall.ECONNREFUSED) && (err == nil || !bytes.Contains([]byte(err.Error()), []byte("refused"))) {
			t.Errorf("dial %s: %v, want connection refused", dst, err)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("dial %s: refusal took %s", dst, time.Since(start))
		}
	}
	if st := s.Stats(); st.RefusedPolicy != 2 || st.TCPDialFailed != 1 {
		t.Fatalf("stats %+v: want 2 policy refusals (outside routes, other client) and 1 failed dial", st)
	}
}

func TestLoopbackDeniedByDefault(t *testing.T) {
	s, c := newTestStack(t, nil, nil)
	echo := echoServer(t)
	if _, err := c.dial(t, echo); err == nil {
		t.Fatal("reached the host's loopback without egress_allow")
	}
	if s.Stats().RefusedPolicy != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestSpoofedSourceDropped(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	pkt := make([]byte, 28)
	pkt[0], pkt[3], pkt[8], pkt[9] = 0x45, 28, 64, 17
	copy(pkt[12:16], netip.MustParseAddr("10.250.77.6").AsSlice())
	copy(pkt[16:20], netip.MustParseAddr("127.0.0.1").AsSlice())
	c.port.Send(pkt)
	c.port.Send([]byte{0x99, 1, 2})
	if st := s.Stats(); st.DroppedSpoofed != 1 || st.DroppedMalformed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUDPEchoAndExpiry(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 2000)
		for {
			n, a, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], a)
		}
	}()
	dst := netip.MustParseAddrPort(pc.LocalAddr().String())
	uc, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write([]byte("ping"))
	b := make([]byte, 100)
	n, err := uc.Read(b)
	if err != nil || string(b[:n]) != "ping" {
		t.Fatalf("UDP echo: %q %v", b[:n], err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.port.(*port).flows.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("UDP flow did not expire")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.Stats().UDPFlows != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

// TestDNSAtGateway: the gateway answers from the host's resolver, leaves out addresses the user may not reach
// (localhost is 127.0.0.1, refused unless egress_allow names it), and survives garbage.
func TestDNSAtGateway(t *testing.T) {
	query := func(c *testClient) dnsmessage.Message {
		t.Helper()
		uc, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(gateway.AsSlice()), Port: 53}, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		uc.Write([]byte{1, 2, 3}) // garbage: dropped, no crash
		r := exchangeDNS(t, uc, dnsmessage.Message{Header: dnsmessage.Header{ID: 42, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("localhost."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}})
		if r.ID != 42 || r.RCode != dnsmessage.RCodeSuccess {
			t.Fatalf("answer %+v", r)
		}
		return r
	}
	s, c := newTestStack(t, nil, nil)
	if r := query(c); len(r.Answers) != 0 || s.Stats().DNSFiltered != 1 || s.Stats().DNSQueries != 1 {
		t.Fatalf("localhost without egress_allow: answers %v, stats %+v; want none, one filtered", r.Answers, s.Stats())
	}
	_, c = newTestStack(t, loopback, nil)
	r := query(c)
	if len(r.Answers) == 0 {
		t.Fatalf("localhost with egress_allow: no answer")
	}
	if a, ok := r.Answers[0].Body.(*dnsmessage.AResource); !ok || netip.AddrFrom4(a.A) != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("answer %v", r.Answers[0].Body)
	}
}

// TestDNSUpstream: dns_upstream servers answer instead of the host's resolver.
func TestDNSUpstream(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() { // a one-record DNS server: every A query is 10.77.0.9
		b := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(b[:n]) != nil || len(m.Questions) == 0 {
				continue
			}
			m.Response = true
			m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA,
				Class: dnsmessage.ClassINET, TTL: 5}, Body: &dnsmessage.AResource{A: [4]byte{10, 77, 0, 9}}}}
			out, _ := m.Pack()
			pc.WriteTo(out, from)
		}
	}()
	res := upstreamResolver([]netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := res.LookupNetIP(ctx, "ip4", "anything.example")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.77.0.9") {
		t.Fatalf("lookup through the upstream: %v %v", addrs, err)
	}
}

func TestPortCloseEndsFlows(t *testing.T) {
	_, c := newTestStack(t, loopback, nil)
	conn, err := c.dial(t, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("x"))
	b := make([]byte, 1)
	io.ReadFull(conn, b)
	done := make(chan struct{})
	go func() { c.port.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Port.Close did not return: a relay is stuck")
	}
	if err := c.port.Send([]byte{0x45}); err == nil {
		t.Fatal("Send after Close succeeded")
	}
}

// BenchmarkSendDeliver measures a packet from the client into the stack and the stack's reply out to the
// session (an ICMP echo to the gateway), with allocations per round trip.
func BenchmarkSendDeliver(b *testing.B) {
	s, err := New(Config{Gateway: gateway, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	got := make(chan struct{}, 1)
	p, err := s.Attach(&datapath.Session{ID: 1, Addrs: []netip.Addr{clientIP}, MTU: 1500, Deliver: func([]byte) {
		select {
		case got <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	echo := make([]byte, 28+1000)
	ip := header.IPv4(echo)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(echo)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFromSlice(clientIP.AsSlice()), DstAddr: tcpip.AddrFromSlice(gateway.AsSlice())})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(echo[20:])
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetChecksum(0)
	icmp.SetChecksum(^checksumOf(echo[20:]))
	b.ReportAllocs()
	b.SetBytes(int64(len(echo)))
	for b.Loop() {
		p.Send(echo)
		<-got
	}
}

func checksumOf(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestClientToClient: a packet for another session's address is switched to that session when both allow it,
// and refused (not delivered, counted) when either does not.
func TestClientToClient(t *testing.T) {
	s, err := New(Config{Gateway: gateway, Pool: netip.MustParsePrefix("10.250.77.0/24"),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b, c := netip.MustParseAddr("10.250.77.10"), netip.MustParseAddr("10.250.77.11"), netip.MustParseAddr("10.250.77.12")
	got := map[netip.Addr]int{}
	var mu sync.Mutex
	attach := func(addr netip.Addr, c2c bool) datapath.Port {
		p, err := s.Attach(&datapath.Session{Addrs: []netip.Addr{addr}, MTU: 1500, ClientToClient: c2c,
			Deliver: func([]byte) { mu.Lock(); got[addr]++; mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pa, pb, pc := attach(a, true), attach(b, true), attach(c, false)
	udp4 := func(src, dst netip.Addr) []byte {
		pkt := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+4)
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
			SrcAddr: tcpip.AddrFromSlice(src.AsSlice()), DstAddr: tcpip.AddrFromSlice(dst.AsSlice())})
		ip.SetChecksum(^ip.CalculateChecksum())
		return pkt
	}
	pa.Send(udp4(a, b)) // allowed both ways
	pb.Send(udp4(b, a))
	pa.Send(udp4(a, c)) // c refuses
	pc.Send(udp4(c, a))
	mu.Lock()
	defer mu.Unlock()
	if got[a] != 1 || got[b] != 1 || got[c] != 0 {
		t.Fatalf("deliveries %v, want one each to a and b, none to c", got)
	}
	if st := s.Stats(); st.Switched != 2 || st.DeniedClientToClient != 2 {
		t.Fatalf("stats %+v: want 2 switched, 2 denied", st)
	}
}
