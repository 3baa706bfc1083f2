// Package egresstest holds the one table of egress decisions that every place asking egress is tested against:
// egress.SessionPolicy.Decide itself, the netstack's forwarder and switch decisions, and the kernel-TUN port's
// per-packet check. Each runs Cases through its own adapter, so that the datapaths cannot disagree again. It is
// imported by tests only.
package egresstest

import (
	"fmt"
	"net/netip"

	"ocgate/config"
	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// The addresses every case uses: the pools with the server's gateway addresses, the session's client, and the
// other session's (the peer's) client.
var (
	Pool     = netip.MustParsePrefix("10.250.77.0/24")
	Gateway  = netip.MustParseAddr("10.250.77.1")
	Pool6    = netip.MustParsePrefix("fd00:77::/64")
	Gateway6 = netip.MustParseAddr("fd00:77::1")
	Client   = []netip.Addr{netip.MustParseAddr("10.250.77.9"), netip.MustParseAddr("fd00:77::9")}
	Peer     = []netip.Addr{netip.MustParseAddr("10.250.77.10"), netip.MustParseAddr("fd00:77::10")}
	// HostAddr and HostAddr6 are the server host's own addresses, with their subnets.
	HostAddr  = netip.MustParsePrefix("198.51.100.7/24")
	HostAddr6 = netip.MustParsePrefix("2001:db8:77::7/64")
)

// Datapaths says which datapaths a case describes.
type Datapaths uint8

const (
	Netstack Datapaths = 1 << iota // flows leave from the host's sockets
	TUN                            // the kernel forwards
	Both     = Netstack | TUN
)

// Case is one flow (or packet) from Client that the policy judges.
type Case struct {
	Name        string
	On          Datapaths
	Allow, Deny []netip.Prefix    // egress_allow, egress_deny (the netstack's; the TUN datapath has none)
	Session     datapath.Session  // the session's facts; Addrs are Client's
	PeerSession *datapath.Session // a session attached at Peer's addresses (Addrs are filled in); nil: none
	Proto       uint8
	Dst         netip.AddrPort
	Want        egress.Verdict
}

// Config is the policy configuration a case's datapath builds.
func (c Case) Config(on Datapaths) egress.Config {
	cfg := egress.Config{Pools: []netip.Prefix{Pool, Pool6}, Gateways: []netip.Addr{Gateway, Gateway6}, ClientBits6: 128}
	if on == Netstack {
		cfg.Allow, cfg.Deny, cfg.HostSockets, cfg.HostAddrs = c.Allow, c.Deny, true, egress.StaticHostAddrs(HostAddr, HostAddr6)
	}
	return cfg
}

// Sessions returns the case's session and its peer's (nil without one), with their addresses.
func (c Case) Sessions() (s, peer *datapath.Session) {
	s = new(datapath.Session)
	*s = c.Session
	s.ID, s.User, s.Addrs, s.MTU = 1, "client", Client, 1400
	if c.PeerSession != nil {
		peer = new(datapath.Session)
		*peer = *c.PeerSession
		peer.ID, peer.User, peer.Addrs, peer.MTU = 2, "peer", Peer, 1400
	}
	return s, peer
}

// Packet is the case's flow as a packet from Client: IPv4 or IPv6 after Dst, with an 8-byte ICMP or UDP header,
// a 20-byte TCP header, or 8 bytes of anything else.
func (c Case) Packet() []byte {
	src := Client[0]
	if c.Dst.Addr().Unmap().Is6() {
		src = Client[1]
	}
	l4 := make([]byte, 8)
	if c.Proto == 6 {
		l4 = make([]byte, 20)
		l4[12], l4[13] = 5<<4, 0x02 // SYN
	}
	l4[0], l4[1], l4[2], l4[3] = 0x9c, 0x40, byte(c.Dst.Port()>>8), byte(c.Dst.Port())
	return IPPacket(src, c.Dst.Addr().Unmap(), c.Proto, l4)
}

// IPPacket returns an IPv4 (with its header checksum) or IPv6 packet from src to dst carrying l4.
func IPPacket(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	if src.Is6() {
		b := make([]byte, 40+len(l4))
		b[0], b[6], b[7] = 0x60, proto, 64
		b[4], b[5] = byte(len(l4)>>8), byte(len(l4))
		copy(b[8:24], src.AsSlice())
		copy(b[24:40], dst.AsSlice())
		copy(b[40:], l4)
		return b
	}
	b := make([]byte, 20+len(l4))
	b[0], b[8], b[9] = 0x45, 64, proto
	b[2], b[3] = byte(len(b)>>8), byte(len(b))
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	b[10], b[11] = byte(^sum>>8), byte(^sum)
	copy(b[20:], l4)
	return b
}

// UDP returns an IPv4 UDP packet (without UDP checksum).
func UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	l4 := make([]byte, 8+len(payload))
	l4[0], l4[1], l4[2], l4[3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	l4[4], l4[5] = byte(len(l4)>>8), byte(len(l4))
	copy(l4[8:], payload)
	return IPPacket(src, dst, 17, l4)
}

func mustRoutes(routes string) []netip.Prefix {
	c, err := config.Parse([]byte("route = "+routes+"\n"), "routes.toml")
	if err != nil {
		panic(err)
	}
	return c.Routes
}

func mustPorts(s string) datapath.PortRules {
	r, err := config.ParsePorts(s)
	if err != nil {
		panic(err)
	}
	out := datapath.PortRules{Deny: r.Deny}
	for _, x := range r.Rules {
		out.Rules = append(out.Rules, datapath.PortRule(x))
	}
	return out
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

const (
	tcp    = 6
	udp    = 17
	icmp   = 1
	icmpv6 = 58
)

// Cases are the situations every datapath must judge as Decide does.
var Cases = func() []Case {
	routes := mustRoutes(`["10.77.0.0/24", "fd99::/64"]`)
	def := mustRoutes(`["default"]`)
	v4all, v6all := mustRoutes(`["0.0.0.0/0"]`), mustRoutes(`["::/0"]`)
	restricted := func(r []netip.Prefix) datapath.Session { return datapath.Session{Routes: r, RestrictToRoutes: true} }
	allow443 := datapath.Session{Ports: mustPorts("tcp(443)"), DNS: []netip.Addr{netip.MustParseAddr("10.77.0.53")}}
	deny25 := datapath.Session{Ports: mustPorts("!(tcp(25))")}
	c2c := &datapath.Session{ClientToClient: true}
	cs := []Case{
		{Name: "inside the routes", On: Both, Session: restricted(routes), Proto: udp, Dst: ap("10.77.0.5:53"), Want: egress.Allow},
		{Name: "inside the IPv6 routes", On: Both, Session: restricted(routes), Proto: tcp, Dst: ap("[fd99::5]:80"), Want: egress.Allow},
		{Name: "outside the routes, restricted", On: Both, Session: restricted(routes), Proto: udp, Dst: ap("10.88.0.1:53"), Want: egress.DenyNotRouted},
		{Name: "outside the routes: never from the host's sockets", On: Netstack, Session: datapath.Session{Routes: routes}, Proto: tcp, Dst: ap("10.88.0.1:80"), Want: egress.DenyNotRouted},
		{Name: "outside the routes, not restricted: the kernel forwards", On: TUN, Session: datapath.Session{Routes: routes}, Proto: tcp, Dst: ap("10.88.0.1:80"), Want: egress.Allow},
		{Name: "0.0.0.0/0 covers IPv4", On: Both, Session: restricted(v4all), Proto: tcp, Dst: ap("192.0.2.1:80"), Want: egress.Allow},
		{Name: "0.0.0.0/0 does not cover IPv6", On: Both, Session: restricted(v4all), Proto: tcp, Dst: ap("[2001:db8::1]:80"), Want: egress.DenyNotRouted},
		{Name: "::/0 covers IPv6", On: Both, Session: restricted(v6all), Proto: tcp, Dst: ap("[2001:db8::1]:80"), Want: egress.Allow},
		{Name: "::/0 does not cover IPv4", On: Both, Session: restricted(v6all), Proto: tcp, Dst: ap("192.0.2.1:80"), Want: egress.DenyNotRouted},
		{Name: "default covers IPv4", On: Both, Session: restricted(def), Proto: tcp, Dst: ap("192.0.2.1:80"), Want: egress.Allow},
		{Name: "default covers IPv6", On: Both, Session: restricted(def), Proto: tcp, Dst: ap("[2001:db8::1]:80"), Want: egress.Allow},
		{Name: "no routes cover IPv4", On: Both, Session: restricted(nil), Proto: udp, Dst: ap("192.0.2.1:53"), Want: egress.Allow},
		{Name: "no routes cover IPv6", On: Both, Session: restricted(nil), Proto: udp, Dst: ap("[2001:db8::1]:53"), Want: egress.Allow},
		{Name: "a no-route excludes", On: Both, Session: datapath.Session{NoRoutes: pfx("192.0.2.0/24"), RestrictToRoutes: true}, Proto: tcp, Dst: ap("192.0.2.9:80"), Want: egress.DenyNotRouted},
		{Name: "a no-route inside the default route excludes", On: Both, Session: datapath.Session{Routes: def, NoRoutes: pfx("fd98::/64"), RestrictToRoutes: true}, Proto: tcp, Dst: ap("[fd98::1]:80"), Want: egress.DenyNotRouted},
		{Name: "the deny list wins over the routes", On: Netstack, Deny: pfx("10.77.0.2/32"), Session: datapath.Session{Routes: routes}, Proto: tcp, Dst: ap("10.77.0.2:80"), Want: egress.DenyListed},
		{Name: "the deny list wins over the allow list", On: Netstack, Allow: pfx("127.0.0.1/32"), Deny: pfx("127.0.0.0/8"), Proto: tcp, Dst: ap("127.0.0.1:80"), Want: egress.DenyListed},
		{Name: "the allow list names a special address", On: Netstack, Allow: pfx("127.0.0.1/32"), Proto: tcp, Dst: ap("127.0.0.1:80"), Want: egress.Allow},
		{Name: "the allow list does not widen the routes", On: Netstack, Allow: pfx("127.0.0.1/32"), Session: datapath.Session{Routes: routes}, Proto: tcp, Dst: ap("127.0.0.1:80"), Want: egress.DenyNotRouted},
		{Name: "special addresses in kernel mode are the kernel's", On: TUN, Proto: udp, Dst: ap("224.0.0.251:5353"), Want: egress.Allow},
	}
	for _, s := range []string{"[64:ff9b::7f00:1]:80", "[::127.0.0.1]:80", "[2002:7f00:1::1]:80", "[64:ff9b::a9fe:a9fe]:80",
		"[2001:0:a9fe:a9fe::1]:80", "[fe80::5efe:7f00:1]:80"} {
		cs = append(cs, Case{Name: "IPv4 embedded in " + s, On: Netstack, Proto: tcp, Dst: ap(s), Want: egress.DenySpecial})
	}
	cs = append(cs, []Case{
		{Name: "the host's own address", On: Netstack, Proto: tcp, Dst: netip.AddrPortFrom(HostAddr.Addr(), 22), Want: egress.DenyHost},
		{Name: "the host's own IPv6 address", On: Netstack, Proto: tcp, Dst: netip.AddrPortFrom(HostAddr6.Addr(), 22), Want: egress.DenyHost},
		{Name: "the directed broadcast of the host's subnet", On: Netstack, Proto: udp, Dst: ap("198.51.100.255:137"), Want: egress.DenyHost},
		{Name: "another address of the host's subnet", On: Netstack, Proto: tcp, Dst: ap("198.51.100.8:22"), Want: egress.Allow},
		{Name: "the host's own address, embedded (NAT64)", On: Netstack, Proto: tcp, Dst: ap("[64:ff9b::c633:6407]:22"), Want: egress.DenyHost},
		{Name: "an IPv4 address in egress_deny, embedded (6to4)", On: Netstack, Deny: pfx("10.77.0.2/32"), Proto: tcp, Dst: ap("[2002:a4d:2::1]:80"), Want: egress.DenyListed},
		{Name: "an ordinary IPv4 address, embedded (NAT64)", On: Netstack, Proto: tcp, Dst: ap("[64:ff9b::c000:201]:80"), Want: egress.Allow},
		{Name: "the allow list names the host's address", On: Netstack, Allow: pfx(HostAddr.Addr().String() + "/32"), Proto: tcp, Dst: netip.AddrPortFrom(HostAddr.Addr(), 22), Want: egress.Allow},
		{Name: "the host's address in kernel mode is the kernel's", On: TUN, Proto: tcp, Dst: netip.AddrPortFrom(HostAddr.Addr(), 22), Want: egress.Allow},
	}...)
	for _, s := range []string{"127.0.0.2:80", "[::1]:80", "[::ffff:127.0.0.2]:80", "169.254.169.254:80", "[fe80::1]:80",
		"224.0.0.251:5353", "255.255.255.255:67", "0.0.0.0:80", "0.1.2.3:80", "[ff02::1]:80"} {
		cs = append(cs, Case{Name: "special address " + s, On: Netstack, Proto: udp, Dst: ap(s), Want: egress.DenySpecial})
	}
	cs = append(cs, []Case{
		{Name: "ports: listed", On: Both, Session: allow443, Proto: tcp, Dst: ap("192.0.2.1:443"), Want: egress.Allow},
		{Name: "ports: not listed", On: Both, Session: allow443, Proto: tcp, Dst: ap("192.0.2.1:80"), Want: egress.DenyPort},
		{Name: "ports: another protocol on the listed port", On: Both, Session: allow443, Proto: udp, Dst: ap("192.0.2.1:443"), Want: egress.DenyPort},
		{Name: "ports: ICMP not listed", On: Both, Session: allow443, Proto: icmp, Dst: ap("192.0.2.1:0"), Want: egress.DenyPort},
		{Name: "ports: ICMPv6 listed", On: Both, Session: datapath.Session{Ports: mustPorts("icmpv6()")}, Proto: icmpv6, Dst: ap("[2001:db8::1]:0"), Want: egress.Allow},
		{Name: "ports: UDP DNS to the pushed server", On: Both, Session: allow443, Proto: udp, Dst: ap("10.77.0.53:53"), Want: egress.Allow},
		{Name: "ports: TCP DNS to the pushed server", On: Both, Session: allow443, Proto: tcp, Dst: ap("10.77.0.53:53"), Want: egress.Allow},
		{Name: "ports: DNS to another server", On: Both, Session: allow443, Proto: udp, Dst: ap("10.77.0.54:53"), Want: egress.DenyPort},
		{Name: "ports: another port of the pushed server", On: Both, Session: allow443, Proto: udp, Dst: ap("10.77.0.53:54"), Want: egress.DenyPort},
		{Name: "ports !(): listed", On: Both, Session: deny25, Proto: tcp, Dst: ap("192.0.2.1:25"), Want: egress.DenyPort},
		{Name: "ports !(): not listed", On: Both, Session: deny25, Proto: tcp, Dst: ap("192.0.2.1:80"), Want: egress.Allow},
		{Name: "ports !(): another protocol", On: Both, Session: deny25, Proto: icmp, Dst: ap("192.0.2.1:0"), Want: egress.Allow},
		{Name: "ports after the routes", On: Both, Session: datapath.Session{Routes: routes, RestrictToRoutes: true, Ports: mustPorts("tcp(443)")}, Proto: tcp, Dst: ap("10.88.0.1:443"), Want: egress.DenyNotRouted},
		{Name: "gateway: never asked about ports", On: Both, Session: allow443, Proto: udp, Dst: netip.AddrPortFrom(Gateway, 9999), Want: egress.Allow},
		{Name: "IPv6 gateway: never asked about ports", On: Both, Session: allow443, Proto: udp, Dst: netip.AddrPortFrom(Gateway6, 9999), Want: egress.Allow},
		{Name: "gateway: reachable outside the routes", On: Both, Session: restricted(routes), Proto: icmp, Dst: netip.AddrPortFrom(Gateway, 0), Want: egress.Allow},
		{Name: "client to client", On: Both, Session: datapath.Session{ClientToClient: true}, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.Allow},
		{Name: "client to client over IPv6", On: Both, Session: datapath.Session{ClientToClient: true}, PeerSession: c2c, Proto: udp, Dst: netip.AddrPortFrom(Peer[1], 53), Want: egress.Allow},
		{Name: "client to client refused by the sender", On: Both, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.DenyClientToClient},
		{Name: "client to client refused by the receiver", On: Both, Session: datapath.Session{ClientToClient: true}, PeerSession: &datapath.Session{}, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.DenyClientToClient},
		{Name: "client to client, restricted, outside the routes", On: Both, Session: datapath.Session{ClientToClient: true, Routes: routes, RestrictToRoutes: true}, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.DenyNotRouted},
		{Name: "client to client, restricted, inside the routes", On: Both, Session: datapath.Session{ClientToClient: true, Routes: pfx("10.250.77.0/24"), RestrictToRoutes: true}, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.Allow},
		{Name: "client to client, a refused port", On: Both, Session: datapath.Session{ClientToClient: true, Ports: mustPorts("tcp(443)")}, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.DenyPort},
		{Name: "client to client ignores the deny list", On: Netstack, Deny: pfx("10.250.77.0/24"), Session: datapath.Session{ClientToClient: true}, PeerSession: c2c, Proto: tcp, Dst: netip.AddrPortFrom(Peer[0], 8080), Want: egress.Allow},
		{Name: "a pool address nobody holds never goes to the host", On: Both, Session: datapath.Session{ClientToClient: true}, Proto: tcp, Dst: ap("10.250.77.99:80"), Want: egress.DenyNotRouted},
		{Name: "an IPv6 pool address nobody holds", On: Both, Session: datapath.Session{ClientToClient: true}, Proto: tcp, Dst: ap("[fd00:77::99]:80"), Want: egress.DenyNotRouted},
	}...)
	for i := range cs {
		if cs[i].On == 0 {
			panic(fmt.Sprintf("case %q: no datapath", cs[i].Name))
		}
	}
	return cs
}()

// ForEach runs f for every case that applies to datapath on.
func ForEach(on Datapaths, f func(Case)) {
	for _, c := range Cases {
		if c.On&on != 0 {
			f(c)
		}
	}
}
