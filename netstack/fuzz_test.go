package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// FuzzAnswerDNS: any message a client sends to the built-in DNS gets no answer (nil) or a well-formed response
// with the query's ID, never a panic. The resolver fails at once (SERVFAIL), so only the parsing is exercised.
func FuzzAnswerDNS(f *testing.F) {
	for _, q := range []dnsmessage.Message{
		{Header: dnsmessage.Header{ID: 1}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("a.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}},
		{Header: dnsmessage.Header{ID: 2}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("1.0.0.127.in-addr.arpa."), Type: dnsmessage.TypePTR, Class: dnsmessage.ClassINET}}},
		{Header: dnsmessage.Header{ID: 3, OpCode: 4}},
	} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Add([]byte{1, 2, 3})
	failing := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no upstream in this test")
	}}
	s := newLimitStack(f, func(c *Config) { c.Resolver = failing; c.ICMP = "off" })
	pp, err := s.Attach(&datapath.Session{ID: 1, User: "fuzz", Addrs: []netip.Addr{clientIP}, MTU: 1500, Deliver: func([]byte) {}})
	if err != nil {
		f.Fatal(err)
	}
	p := pp.(*port)
	f.Fuzz(func(t *testing.T, msg []byte) {
		resp := s.answerDNS(p, msg)
		if resp == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("malformed response %x to %x: %v", resp, msg, err)
		}
		if len(msg) >= 2 && m.ID != uint16(msg[0])<<8|uint16(msg[1]) {
			t.Fatalf("response ID %d for query %x", m.ID, msg[:2])
		}
	})
}

// FuzzSend: any packet a client sends into its port is dropped, answered or forwarded, never a panic.
func FuzzSend(f *testing.F) {
	f.Add(echoRequest(clientIP, gateway, 1))
	f.Add(echoRequest(clientIP, clientB, 1))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 17, 64})
	f.Add([]byte{0x45})
	s := newLimitStack(f, func(c *Config) { c.Policy = egress.Config{}; c.ICMP = "off" })
	port, err := s.Attach(&datapath.Session{ID: 1, User: "fuzz", Addrs: []netip.Addr{clientIP}, MTU: 1500, ClientToClient: true, Deliver: func([]byte) {}})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Attach(&datapath.Session{ID: 2, User: "peer", Addrs: []netip.Addr{clientB}, MTU: 1500, ClientToClient: true, Deliver: func([]byte) {}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) >= 20 && pkt[0]>>4 == 4 {
			copy(pkt[12:16], clientIP.AsSlice()) // mostly from the session's address, so that it gets past the source check
		}
		port.Send(pkt)
	})
}
