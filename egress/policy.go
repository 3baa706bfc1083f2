// Package egress is the host side of the netstack data path: the policy that decides which destinations a session
// may reach, and the dialer that re-originates flows from the host's own sockets.
package egress

import "net/netip"

// Verdict is the policy's answer for one destination.
type Verdict int

const (
	Allow         Verdict = iota
	DenyNotRouted         // outside the routes pushed to the session, or inside its no-routes
	DenySpecial           // loopback, link-local, unspecified, multicast or broadcast, not named by the allow list
	DenyListed            // inside the deny list (egress_deny), which always wins
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
	}
	return "unknown verdict"
}

// Policy decides egress. It is immutable after NewPolicy and safe for concurrent use.
type Policy struct {
	allow, deny []netip.Prefix
}

// NewPolicy returns a policy with the given allow list (egress_allow) and deny list (egress_deny).
func NewPolicy(allow, deny []netip.Prefix) *Policy {
	return &Policy{allow: canon(allow), deny: canon(deny)}
}

func canon(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked())
	}
	return out
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return 96
	}
	return 0
}

// Decide says whether a session with the given pushed routes (empty, or holding a /0 of the destination's family,
// means everything) and no-routes may reach dst. Order: the deny list, then the routes, then the special-purpose
// addresses (unless allowed).
func (p *Policy) Decide(routes, noRoutes []netip.Prefix, dst netip.Addr) Verdict {
	dst = dst.Unmap()
	if contains(p.deny, dst) {
		return DenyListed
	}
	if !routed(routes, dst) || contains(noRoutes, dst) {
		return DenyNotRouted
	}
	if special(dst) && !contains(p.allow, dst) {
		return DenySpecial
	}
	return Allow
}

// Special reports whether the policy would refuse dst as a special-purpose address; used by the dialer as a last
// check on the address it actually connects to.
func (p *Policy) Special(dst netip.Addr) bool {
	dst = dst.Unmap()
	return contains(p.deny, dst) || special(dst) && !contains(p.allow, dst)
}

func routed(routes []netip.Prefix, dst netip.Addr) bool {
	if len(routes) == 0 {
		return true
	}
	for _, r := range routes {
		if r.Bits() == 0 && r.Addr().Is4() == dst.Is4() || r.Contains(dst) {
			return true
		}
	}
	return false
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
