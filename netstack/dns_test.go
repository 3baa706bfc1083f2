package netstack

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"ocgate/protocol/datapath"
)

// An upstream that never answers (dns_upstream pointing at a black hole) gets the client SERVFAIL within 2 s,
// before the client's own timeout, not silence.
func TestDNSUnreachableUpstreamServFail(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0") // reads queries, answers none
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	s := newLimitStack(t, func(c *Config) { c.Upstream = []netip.AddrPort{netip.MustParseAddrPort(hole.LocalAddr().String())} })
	c := attachClient(t, s, clientIP, nil)
	uc, err := gonet.DialUDP(c.st, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(gateway.AsSlice()), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, _ := q.Pack()
	start := time.Now()
	uc.SetDeadline(start.Add(5 * time.Second))
	if _, err := uc.Write(msg); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1500)
	n, err := uc.Read(b)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("no answer after %s: %v", took, err)
	}
	var r dnsmessage.Message
	if err := r.Unpack(b[:n]); err != nil {
		t.Fatal(err)
	}
	if r.ID != 7 || r.RCode != dnsmessage.RCodeServerFailure || took > 2*time.Second {
		t.Fatalf("answer %v (rcode %v) after %s, want SERVFAIL within 2s", r.Header, r.RCode, took)
	}
}

// syncWriter is a log destination tests read while the stack writes.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// A flow the egress policy refuses is logged at info, refusedLogBurst lines per session at once.
func TestRefusedFlowsLoggedAtInfo(t *testing.T) {
	var logs syncWriter
	s := newLimitStack(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	c := attachClient(t, s, clientIP, func(sess *datapath.Session) {
		sess.User, sess.Routes = "t", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	for range refusedLogBurst + 2 {
		if _, err := c.dial(t, netip.MustParseAddrPort("192.0.2.1:80")); err == nil { // outside the routes: refused
			t.Fatal("reached a destination outside the routes")
		}
	}
	if got := strings.Count(logs.String(), "flow refused by the egress policy"); got != refusedLogBurst || !strings.Contains(logs.String(), "dst=192.0.2.1:80 why=") {
		t.Fatalf("%d refusal lines, want %d:\n%s", got, refusedLogBurst, logs.String())
	}
	if s.Stats().RefusedPolicy != refusedLogBurst+2 {
		t.Fatalf("stats %+v, want %d policy refusals", s.Stats(), refusedLogBurst+2)
	}
}
