package egress

import "net/netip"

// IPv6 forms that carry an IPv4 address, which a host with the matching tunnel or translator would deliver to that
// IPv4 address. The policy judges the embedded address too, so that a user allowed ::/0 cannot reach the host's
// loopback or a metadata service as 64:ff9b::7f00:1 (NAT64), ::127.0.0.1 (IPv4-compatible) or 2002:7f00:1::1
// (6to4). (IPv4-mapped ::ffff:a.b.c.d is unmapped before anything else.)
var (
	compat4   = netip.MustParsePrefix("::/96")          // IPv4-compatible (deprecated, RFC 4291)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")   // NAT64 well-known prefix (RFC 6052)
	nat64l    = netip.MustParsePrefix("64:ff9b:1::/48") // NAT64 local-use prefix (RFC 8215), as a /96
	sixToFour = netip.MustParsePrefix("2002::/16")      // 6to4 (RFC 3056): the IPv4 address in bits 16-47
	teredo    = netip.MustParsePrefix("2001::/32")      // Teredo (RFC 4380): server in bits 32-63, client inverted at the end
)

// embedded4 returns the IPv4 addresses a carries in one of the forms above (at most two: Teredo's server and
// client), and how many.
func embedded4(a netip.Addr) (out [2]netip.Addr, n int) {
	if !a.Is6() || a.Is4In6() {
		return out, 0
	}
	b := a.As16()
	last := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case compat4.Contains(a), nat64.Contains(a), nat64l.Contains(a):
		out[0], n = last, 1
	case sixToFour.Contains(a):
		out[0], n = netip.AddrFrom4([4]byte(b[2:6])), 1
	case teredo.Contains(a):
		out[0] = netip.AddrFrom4([4]byte(b[4:8]))
		out[1] = netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		n = 2
	case b[10] == 0x5e && b[11] == 0xfe && (b[8]|2) == 2 && b[9] == 0: // ISATAP interface identifier (RFC 5214)
		out[0], n = last, 1
	}
	return out, n
}
