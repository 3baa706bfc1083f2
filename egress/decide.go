// Package egress is the host side of the data paths: the one policy decision on what a session's client may
// reach (Decide), the packet reading it needs, and the dialer that re-originates netstack flows from the host's
// own sockets. The kernel-TUN datapath is egress/tun; the privileged helper and scripts are egress/privsep.
//
// One decision, in this order (Decide):
//
//	the server's in-pool address    allowed: the datapath serves it itself; never asked about routes or ports
//	another session's address       only switched between sessions, never sent to the host: both sessions allow
//	                                client_to_client, (restrict_user_to_routes) inside the routes, then the ports
//	egress_deny                     refused, whatever the routes say
//	routes, no-routes               outside the routes pushed to the client, or inside its no-routes: refused
//	                                (always for flows from the host's sockets, else with restrict_user_to_routes)
//	special-purpose addresses       loopback, link-local, multicast, broadcast, the host's own addresses and its
//	                                subnets' directed broadcasts (hostaddrs.go), IPv6 forms embedding any of
//	                                those (embedded.go): refused from the host's sockets unless egress_allow
//	                                names them
//	restrict_user_to_ports          the protocol and destination port; TCP and UDP port 53 to the pushed DNS
//	                                servers always pass (as under ocserv's ocserv-fw)
//
// A route list names what it covers, as in ocserv: "default" is 0.0.0.0/0 and ::/0 (config turns it into both),
// 0.0.0.0/0 alone covers IPv4 only and ::/0 IPv6 only; an empty list covers everything.
package egress

import (
	"net/netip"
	"slices"

	"ocgate/protocol/datapath"
)

// Verdict is the policy's answer for one flow or packet.
type Verdict uint8

const (
	Allow              Verdict = iota
	DenyNotRouted              // outside the routes pushed to the session, inside its no-routes, or a pool address nobody holds
	DenySpecial                // loopback, link-local, unspecified, multicast or broadcast, not named by the allow list
	DenyListed                 // inside the deny list (egress_deny), which always wins
	DenyPort                   // refused by restrict_user_to_ports
	DenyClientToClient         // another session's address, and one of the two sessions refuses client_to_client
	DenyHost                   // an address of the server's host (hostaddrs.go), not named by the allow list
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allowed"
	case DenyNotRouted:
		return "outside the routes pushed to the user"
	case DenySpecial:
		return "special-purpose address (loopback, link-local, multicast...)"
	case DenyListed:
		return "in egress_deny"
	case DenyPort:
		return "restrict_user_to_ports"
	case DenyClientToClient:
		return "client_to_client"
	case DenyHost:
		return "an address of the server's host"
	}
	return "unknown verdict"
}

// Config is the server-wide part of the policy.
type Config struct {
	// Allow (egress_allow) names special-purpose destinations that flows from the host's sockets may reach
	// nevertheless; Deny (egress_deny) is refused for everyone and wins over everything but the pools.
	Allow, Deny []netip.Prefix
	// Pools are the client address pools (IPv4, IPv6): other sessions' addresses. ClientBits6 is the length of
	// each client's IPv6 prefix inside the IPv6 pool; 0 means 128 (one address).
	Pools       []netip.Prefix
	ClientBits6 int
	// Gateways are the server's own in-pool addresses: always reachable, never asked about ports.
	Gateways []netip.Addr
	// HostSockets says that the datapath re-originates flows from the host's own sockets (netstack): the routes
	// always apply to them (restrict_user_to_routes or not), and special-purpose addresses are refused unless
	// Allow names them. Without it (kernel TUN, where the kernel forwards) only restrict_user_to_routes applies
	// the routes, and the kernel is left to refuse what it would never forward.
	HostSockets bool
	// HostAddrs are the host's own addresses (and its subnets' directed broadcasts), refused like loopback from
	// the host's sockets unless Allow names them; nil = none known.
	HostAddrs *HostAddrs
}

// Policy is the server-wide part of the policy. It is immutable after NewPolicy and safe for concurrent use.
type Policy struct {
	allow, deny, pools []netip.Prefix
	bits6              int
	gws                []netip.Addr
	host               bool
	hostAddrs          *HostAddrs
}

// NewPolicy returns the policy cfg describes.
func NewPolicy(cfg Config) *Policy {
	p := &Policy{allow: canon(cfg.Allow), deny: canon(cfg.Deny), pools: canon(cfg.Pools), bits6: cfg.ClientBits6,
		host: cfg.HostSockets, hostAddrs: cfg.HostAddrs}
	if p.bits6 <= 0 || p.bits6 > 128 {
		p.bits6 = 128
	}
	for _, g := range cfg.Gateways {
		if g.IsValid() {
			p.gws = append(p.gws, g.Unmap())
		}
	}
	return p
}

func canon(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked())
		}
	}
	return out
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return 96
	}
	return 0
}

// Client reports whether dst is a client's address (inside a pool, not the server's own) and returns the key
// that identifies its session: the address itself, or for IPv6 the client's prefix's first address. A datapath
// that switches between sessions looks peers up by this key (see Flow.Peer).
func (p *Policy) Client(dst netip.Addr) (key netip.Addr, ok bool) {
	dst = dst.Unmap()
	if !contains(p.pools, dst) || slices.Contains(p.gws, dst) {
		return netip.Addr{}, false
	}
	if dst.Is6() && p.bits6 < 128 {
		return netip.PrefixFrom(dst, p.bits6).Masked().Addr(), true
	}
	return dst, true
}

// Special reports whether the policy refuses dst as a listed or special-purpose address, or one of the host's;
// used by the dialer as a last check on the address it actually connects to.
func (p *Policy) Special(dst netip.Addr) bool {
	dst = dst.Unmap()
	return contains(p.deny, dst) || p.hostRefused(dst) != Allow && !contains(p.allow, dst)
}

// hostRefused says why flows from the host's sockets may not reach dst before the allow list is asked: a
// special-purpose address, one of the host's own, or an IPv6 address embedding such an IPv4 address (embedded.go)
// or one in egress_deny.
func (p *Policy) hostRefused(dst netip.Addr) Verdict {
	if special(dst) {
		return DenySpecial
	}
	if p.hostAddrs.Contains(dst) {
		return DenyHost
	}
	e, n := embedded4(dst)
	for _, a := range e[:n] {
		switch {
		case contains(p.deny, a):
			return DenyListed
		case special(a):
			return DenySpecial
		case p.hostAddrs.Contains(a):
			return DenyHost
		}
	}
	return Allow
}

// SessionPolicy is the policy for one session, built once when it attaches. It is immutable and safe for
// concurrent use; Decide does not allocate.
type SessionPolicy struct {
	p                *Policy
	routes, noRoutes []netip.Prefix // routes without their /0s
	all4, all6       bool           // the routes cover every IPv4 / IPv6 destination
	restrict         bool           // restrict_user_to_routes
	c2c              bool           // client_to_client
	portsDeny        bool           // restrict_user_to_ports is the "!(...)" form
	ports            []datapath.PortRule
	dns              []netip.Addr // the pushed DNS servers: port 53 to them passes the port rules
}

// Session returns the policy for the session s describes.
func (p *Policy) Session(s *datapath.Session) *SessionPolicy {
	sp := &SessionPolicy{p: p, noRoutes: canon(s.NoRoutes), restrict: s.RestrictToRoutes, c2c: s.ClientToClient,
		portsDeny: s.Ports.Deny, ports: slices.Clone(s.Ports.Rules)}
	sp.all4, sp.all6 = len(s.Routes) == 0, len(s.Routes) == 0
	for _, r := range canon(s.Routes) {
		switch {
		case r.Bits() == 0 && r.Addr().Is4():
			sp.all4 = true
		case r.Bits() == 0:
			sp.all6 = true
		default:
			sp.routes = append(sp.routes, r)
		}
	}
	if len(sp.ports) > 0 {
		for _, a := range s.DNS {
			sp.dns = append(sp.dns, a.Unmap())
		}
	}
	return sp
}

// Flow is what Decide judges: a new flow (netstack) or one packet (kernel TUN) from the session's client.
type Flow struct {
	Proto uint8          // IP protocol number: 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, 50 ESP...
	Dst   netip.AddrPort // the destination; the port is TCP's, UDP's or SCTP's destination port, else 0
	// NoPorts marks a non-first fragment: it carries no ports and passes the port rules (its first fragment was
	// judged, and without it the rest is useless). Short marks a packet too short to hold the ports its
	// protocol has: refused by port rules.
	NoPorts, Short bool
	// Peer is, when Dst is another session's address (Policy.Client) that the datapath would deliver to, that
	// session's policy; nil otherwise. A flow to a client's address without a Peer is refused: it never goes to
	// the host.
	Peer *SessionPolicy
}

// Decide judges f (see the package comment for the order).
func (sp *SessionPolicy) Decide(f Flow) Verdict {
	v, ports := sp.decideAddr(f.Dst.Addr().Unmap(), f.Peer)
	if v != Allow || !ports || len(sp.ports) == 0 {
		return v
	}
	return sp.decidePorts(f)
}

// DecideAddr is Decide for every flow to dst from the host's sockets, before the port rules: the DNS server
// leaves out of its answers what it refuses.
func (sp *SessionPolicy) DecideAddr(dst netip.Addr) Verdict {
	v, _ := sp.decideAddr(dst.Unmap(), nil)
	return v
}

// decideAddr judges dst; ports says whether the port rules apply next.
func (sp *SessionPolicy) decideAddr(dst netip.Addr, peer *SessionPolicy) (v Verdict, ports bool) {
	p := sp.p
	for _, g := range p.gws {
		if dst == g {
			return Allow, false
		}
	}
	if contains(p.pools, dst) {
		switch {
		case peer == nil:
			return DenyNotRouted, false
		case !sp.c2c || !peer.c2c:
			return DenyClientToClient, false
		case sp.restrict && !sp.routed(dst):
			return DenyNotRouted, false
		}
		return Allow, true
	}
	if contains(p.deny, dst) {
		return DenyListed, false
	}
	if (sp.restrict || p.host) && !sp.routed(dst) {
		return DenyNotRouted, false
	}
	if p.host {
		if v := p.hostRefused(dst); v != Allow && !contains(p.allow, dst) {
			return v, false
		}
	}
	return Allow, true
}

// routed reports whether dst is inside the session's routes and outside its no-routes.
func (sp *SessionPolicy) routed(dst netip.Addr) bool {
	if contains(sp.noRoutes, dst) {
		return false
	}
	if dst.Is4() && sp.all4 || dst.Is6() && sp.all6 {
		return true
	}
	return contains(sp.routes, dst)
}

const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// decidePorts applies restrict_user_to_ports (there are rules).
func (sp *SessionPolicy) decidePorts(f Flow) Verdict {
	if f.NoPorts {
		return Allow
	}
	if f.Short {
		return DenyPort
	}
	port := f.Dst.Port()
	if port == 53 && (f.Proto == protoTCP || f.Proto == protoUDP) && slices.Contains(sp.dns, f.Dst.Addr().Unmap()) {
		return Allow
	}
	listed := false
	for _, r := range sp.ports {
		if r.Proto == f.Proto && (r.Port == 0 || r.Port == port) {
			listed = true
			break
		}
	}
	if listed == sp.portsDeny {
		return DenyPort
	}
	return Allow
}

var (
	broadcast4 = netip.MustParseAddr("255.255.255.255")
	thisNet4   = netip.MustParsePrefix("0.0.0.0/8")
)

func special(a netip.Addr) bool {
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() ||
		a.IsMulticast() || a.IsInterfaceLocalMulticast() || a == broadcast4 || thisNet4.Contains(a) || !a.IsValid()
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
