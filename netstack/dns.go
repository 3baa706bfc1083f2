package netstack

// The gateway's DNS service: queries sent through the tunnel to the server's in-pool address are answered by
// resolving with the host's resolver, so it works where the host's own resolver listens on loopback (containers)
// and the client needs no route to it. Answers are not filtered: a name resolving to a loopback or link-local
// address is answered truthfully, and the egress policy then refuses the connection.

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"ocgate/egress"
)

const (
	// dnsAnswerTimeout bounds the whole answer to one query, the upstream's retries included: an upstream that
	// does not answer yields SERVFAIL before the client's own timeout (dig and the glibc stub wait 5 s), so the
	// client moves on to its next server or reports the failure instead of waiting in silence.
	dnsAnswerTimeout = 1500 * time.Millisecond
	// dnsTimeout bounds the lookups a flow waits for (ipv4Fallback).
	dnsTimeout     = 5 * time.Second
	dnsIdleTimeout = 30 * time.Second
	dnsTTL         = 60
)

// serveDNSUDP answers the queries of one client UDP flow to the gateway until it has been idle.
func (s *Stack) serveDNSUDP(p *port, c net.Conn) {
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdleTimeout))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if !p.allowDNSQuery() {
			continue
		}
		if resp := s.answerDNS(p, buf[:n]); resp != nil {
			if len(resp) > 512 {
				resp = truncateDNS(resp)
			}
			c.Write(resp)
		}
	}
}

// serveDNSTCP answers length-prefixed queries on one TCP connection to the gateway.
func (s *Stack) serveDNSTCP(p *port, c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)
	defer c.Close()
	var lenBuf [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		if !p.allowDNSQuery() {
			continue
		}
		resp := s.answerDNS(p, q)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// answerDNS builds the response to one query message of p's client; nil means "drop" (not even a header
// parsed). Addresses the client may not reach are left out of A and AAAA answers: a name whose every address is
// refused gets an empty answer (NOERROR, no data), so the user is not handed a destination that would then fail.
func (s *Stack) answerDNS(p *port, msg []byte) []byte {
	var pr dnsmessage.Parser
	h, err := pr.Start(msg)
	if err != nil {
		return nil
	}
	s.stats.dnsQueries.Add(1)
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true}}
	q, err := pr.Question()
	if err != nil || h.Response || h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeFormatError
		if h.OpCode != 0 {
			resp.RCode = dnsmessage.RCodeNotImplemented
		}
		out, _ := resp.Pack()
		return out
	}
	resp.Questions = []dnsmessage.Question{q}
	ctx, cancel := context.WithTimeout(s.ctx, dnsAnswerTimeout)
	defer cancel()
	name := strings.TrimSuffix(q.Name.String(), ".")
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
	switch q.Type {
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		network := "ip4"
		if q.Type == dnsmessage.TypeAAAA {
			network = "ip6"
		}
		addrs, err := s.cfg.Resolver.LookupNetIP(ctx, network, name)
		if err != nil {
			resp.RCode = rcodeFor(err)
			break
		}
		for _, a := range addrs {
			a = a.Unmap()
			if p != nil && p.pol.DecideAddr(a) != egress.Allow {
				s.stats.dnsFiltered.Add(1)
				continue
			}
			if a.Is6() && p != nil {
				p.names.remember(a, name)
			}
			hdr.Type = q.Type
			if q.Type == dnsmessage.TypeA && a.Is4() {
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: a.As4()}})
			} else if q.Type == dnsmessage.TypeAAAA && a.Is6() {
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
	case dnsmessage.TypePTR:
		ip, err := ptrToAddr(name)
		if err != nil {
			resp.RCode = dnsmessage.RCodeNameError
			break
		}
		if p != nil && p.pol.DecideAddr(ip) != egress.Allow {
			// Like A and AAAA answers: nothing about an address the user may not reach (the host's own names
			// for its loopback or internal addresses stay private).
			s.stats.dnsFiltered.Add(1)
			break
		}
		names, err := s.cfg.Resolver.LookupAddr(ctx, ip.String())
		if err != nil {
			resp.RCode = rcodeFor(err)
			break
		}
		hdr.Type = dnsmessage.TypePTR
		for _, n := range names {
			if nn, err := dnsmessage.NewName(dotted(n)); err == nil {
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.PTRResource{PTR: nn}})
			}
		}
	case dnsmessage.TypeTXT:
		txts, err := s.cfg.Resolver.LookupTXT(ctx, name)
		if err != nil {
			resp.RCode = rcodeFor(err)
			break
		}
		hdr.Type = dnsmessage.TypeTXT
		for _, t := range txts {
			resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.TXTResource{TXT: []string{t}}})
		}
	default:
		resp.RCode = dnsmessage.RCodeNotImplemented
	}
	out, err := resp.Pack()
	if err != nil {
		resp.Answers, resp.RCode = nil, dnsmessage.RCodeServerFailure
		out, _ = resp.Pack()
	}
	return out
}

func rcodeFor(err error) dnsmessage.RCode {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return dnsmessage.RCodeNameError
	}
	return dnsmessage.RCodeServerFailure
}

func dotted(n string) string {
	if strings.HasSuffix(n, ".") {
		return n
	}
	return n + "."
}

// ptrToAddr turns "4.3.2.1.in-addr.arpa" into 1.2.3.4 (IPv4 only; IPv6 PTR is answered NXDOMAIN).
func ptrToAddr(name string) (netip.Addr, error) {
	rest, ok := strings.CutSuffix(strings.ToLower(name), ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, errors.New("not an in-addr.arpa name")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, errors.New("bad in-addr.arpa name")
	}
	for i, j := 0, 3; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return netip.ParseAddr(strings.Join(parts, "."))
}

// truncateDNS drops the answers of an oversized UDP response and sets TC, so the client retries over TCP.
func truncateDNS(msg []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(msg); err != nil {
		return nil
	}
	m.Answers, m.Authorities, m.Additionals = nil, nil, nil
	m.Truncated = true
	out, _ := m.Pack()
	return out
}

// upstreamResolver is Go's resolver talking to servers instead of those of /etc/resolv.conf: each connection it
// opens goes to the next server in turn (Go's resolver retries a failed query, so a dead server costs a retry);
// a server that cannot be dialled (TCP) is skipped. A connection lives no longer than the lookup that opened it.
func upstreamResolver(servers []netip.AddrPort) *net.Resolver {
	var next atomic.Uint32
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		i := int(next.Add(1)-1) % len(servers)
		var err error
		for range servers {
			var c net.Conn
			if c, err = d.DialContext(ctx, network, servers[i].String()); err == nil {
				// Go's resolver bounds each exchange by its own timeout (resolv.conf's, 5 s), not by the
				// lookup's context: close the connection when that context ends, so that a lookup given up
				// (dnsAnswerTimeout) leaves no read behind on a silent server.
				context.AfterFunc(ctx, func() { c.Close() })
				return c, nil
			}
			i = (i + 1) % len(servers)
		}
		return nil, err
	}}
}

// nameCache remembers which name each IPv6 address the built-in DNS handed out to one session belongs to, so that
// a flow of that session to an IPv6 address the host cannot reach can use the same name's IPv4 address instead.
// Each session has its own: with one cache for all, the last user to resolve a name sharing an IPv6 address with
// another user's name chose where the other user's flows went (their name's IPv4 address). Bounded; entries expire.
type nameCache struct {
	mu    sync.Mutex
	names map[netip.Addr]cachedName // guarded by mu
}

type cachedName struct {
	name    string
	expires time.Time
}

const (
	nameCacheMax = 256 // per session
	nameCacheTTL = 10 * time.Minute
)

func (c *nameCache) remember(a netip.Addr, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names == nil {
		c.names = make(map[netip.Addr]cachedName)
	}
	if len(c.names) >= nameCacheMax {
		now := time.Now()
		for k, v := range c.names {
			if now.After(v.expires) || len(c.names) >= nameCacheMax {
				delete(c.names, k)
			}
		}
	}
	c.names[a] = cachedName{name: name, expires: time.Now().Add(nameCacheTTL)}
}

func (c *nameCache) lookup(a netip.Addr) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.names[a]
	if !ok || time.Now().After(v.expires) {
		return "", false
	}
	return v.name, true
}

// ipv4Fallback finds an IPv4 address of the name the built-in DNS gave dst for, in an answer to p's own client,
// that p's user may reach.
func (s *Stack) ipv4Fallback(p *port, dst netip.Addr, port uint16) (netip.Addr, bool) {
	name, ok := p.names.lookup(dst)
	if !ok {
		return netip.Addr{}, false
	}
	ctx, cancel := context.WithTimeout(s.ctx, dnsTimeout)
	defer cancel()
	addrs, err := s.cfg.Resolver.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() && p.pol.Decide(egress.Flow{Proto: tcpProtocolNumber, Dst: netip.AddrPortFrom(a, port)}) == egress.Allow {
			return a, true
		}
	}
	return netip.Addr{}, false
}
