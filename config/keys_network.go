package config

// Keys of the network inside the tunnel: the address pools, routes, DNS and MTU.

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

var networkKeys = []key{
	{name: "ipv4_network", def: `"10.250.77.0/24"`, scope: anyFile, field: "IPv4Network", set: setIPv4Network,
		user: userIPv4Network,
		doc: "Address pool (CIDR, or an address with ipv4_netmask). The first usable address is the server's own.\n" +
			"In a per-user or per-group file: the session's own pool, shared by every session naming that network\n" +
			"(its first usable address is the server's there too). It must not overlap another pool unless equal."},
	{name: "ipv4_netmask", ex: `"255.255.255.0"`, scope: anyFile, set: setIPv4Netmask, user: userIPv4Netmask,
		doc: "Netmask of ipv4_network when that is an address: dotted, \"/N\" or \"N\"."},
	{name: "ipv6_subnet_prefix", def: "128", scope: anyFile, field: "IPv6SubnetPrefix", conv: integer(0, 128),
		userWhy: poolWhy,
		doc:     "The prefix each client gets out of ipv6_network (128: one address; otherwise at most 124)."},
	{name: "ipv6_network", ex: `"fd00:77::/64"`, scope: anyFile, field: "IPv6Network", set: setIPv6Network,
		user: userIPv6Network,
		doc: "IPv6 inside the tunnel: the pool (CIDR, or an address with ipv6_prefix). Unset: IPv4 only. In a\n" +
			"per-user or per-group file: the session's own IPv6 pool, as ipv4_network there."},
	{name: "ipv6_prefix", ex: "64", scope: anyFile, set: setIPv6Prefix, user: userIPv6Prefix,
		doc: "Prefix length of ipv6_network when that is an address."},
	{name: "dns", def: "[]", scope: anyFile, field: "DNS", conv: list(parseAddrs), user: userDNS,
		doc: "DNS servers pushed to clients. Empty: the server answers DNS itself at its in-pool address. In per-user and\n" +
			"per-group files, dns, ipv4_dns and ipv6_dns add up to the session's list, which replaces the global one."},
	{name: "ipv4_dns", ex: `["192.168.1.53"]`, scope: anyFile, field: "DNS", set: familyDNS(4), user: userFamilyDNS(4),
		doc: "ocserv's IPv4-only synonym of dns: its servers are added to dns's."},
	{name: "ipv6_dns", ex: `["fd00::53"]`, scope: anyFile, field: "DNS", set: familyDNS(6), user: userFamilyDNS(6),
		doc: "ocserv's IPv6-only synonym of dns: its servers are added to dns's."},
	{name: "nbns", def: "[]", scope: anyFile, field: "NBNS", conv: list(parseAddrs), user: userNBNS("nbns"),
		doc: "NetBIOS name servers (WINS) pushed to clients (X-CSTP-NBNS). In per-user and per-group files, nbns,\n" +
			"ipv4_nbns and ipv6_nbns add up to the session's list, which replaces the global one."},
	{name: "ipv4_nbns", ex: `["192.168.1.137"]`, scope: userOnly, user: userNBNS("ipv4_nbns"),
		doc: "ocserv's synonym of nbns in per-user and per-group files."},
	{name: "ipv6_nbns", ex: `["fd00::137"]`, scope: userOnly, user: userNBNS("ipv6_nbns"),
		doc: "ocserv's synonym of nbns in per-user and per-group files."},
	{name: "dns_upstream", def: "[]", field: "DNSUpstream", conv: list(parseUpstreams), netstack: true,
		doc: "Where the netstack's built-in resolver (used when dns is empty) sends queries: IP or IP:PORT. Empty: the\n" +
			"host's resolver. It never answers a user with an address the user may not reach."},
	{name: "split_dns", def: "[]", scope: anyFile, field: "SplitDNS", conv: list(parseDomains), user: userSplitDNS,
		doc: "Domains the client resolves through the tunnel (pushed as split DNS); others use the client's own DNS."},
	{name: "tunnel_all_dns", def: "false", scope: anyFile, field: "TunnelAllDNS", conv: boolean, userField: "TunnelAllDNS",
		doc: "Send every DNS query through the tunnel, even when the routes are split."},
	{name: "default_domain", def: `""`, doc: "DNS search domain pushed to clients.", field: "DefaultDomain", conv: text},
	{name: "route", def: "[]", scope: anyFile, field: "Routes", conv: list(parseRoutes), user: userRoutes,
		doc: "Routes pushed to clients: CIDR, a.b.c.d/m.m.m.m or \"default\". Empty: everything."},
	{name: "no_route", def: "[]", scope: anyFile, field: "NoRoutes", conv: list(parseRoutes), user: userNoRoutes,
		doc: "Routes excluded from the tunnel."},
	{name: "mtu", def: "0", scope: anyFile, field: "MTU", conv: mtu, userField: "MTU",
		doc: "Link MTU, 1280 to 9000 (0: 1500)."},
	{name: "try_mtu_discovery", def: "false", field: "TryMTUDiscovery", conv: boolean,
		doc:   "Probe the path MTU with DPD. Not implemented yet (the client's own MTU probes are answered either way).",
		inert: "not implemented yet: the server does not probe the MTU (it answers the client's probes either way)"},
}

// poolWhy is why ipv6_subnet_prefix is ignored in per-user and per-group files.
const poolWhy = "every IPv6 pool hands out client prefixes of the global length"

// userIPv4Network applies ipv4_network (with ipv4_netmask) in a per-user or per-group file: the session's pool.
func userIPv4Network(p *parser, s *userState, v any) {
	var c Config
	setIPv4Network(p, &c, v)
	if c.IPv4Network.IsValid() {
		s.u.IPv4Network = c.IPv4Network
	}
}

func userIPv4Netmask(p *parser, _ *userState, v any) { setIPv4Netmask(p, nil, v) }

// userIPv6Network applies ipv6_network (with ipv6_prefix) in a per-user or per-group file: the session's IPv6
// pool, handing out prefixes of the global ipv6_subnet_prefix.
func userIPv6Network(p *parser, s *userState, v any) {
	c := Config{IPv6SubnetPrefix: s.c.IPv6SubnetPrefix}
	setIPv6Network(p, &c, v)
	if c.IPv6Network.IsValid() {
		s.u.IPv6Network = c.IPv6Network
	}
}

func userIPv6Prefix(p *parser, _ *userState, v any) { setIPv6Prefix(p, nil, v) }

// familyDNS applies ipv4_dns (family 4) or ipv6_dns (6) of the global file: servers added to dns's.
func familyDNS(family int) func(p *parser, c *Config, v any) {
	name := "ipv" + strconv.Itoa(family) + "_dns"
	return func(p *parser, c *Config, v any) {
		if a, ok := familyAddrs(p, name, family, v); ok {
			c.DNS = append(c.DNS, a...)
		}
	}
}

// familyAddrs converts a list of addresses of one family (4 or 6).
func familyAddrs(p *parser, key string, family int, v any) ([]netip.Addr, bool) {
	a, ok := list(parseAddrs)(p, key, v)
	if !ok {
		return nil, false
	}
	out := a.([]netip.Addr)
	for _, x := range out {
		if x.Unmap().Is4() != (family == 4) {
			p.errf(key, "%s is not an IPv%d address", x, family)
			return nil, false
		}
	}
	return out, true
}

func mtu(p *parser, key string, v any) (any, bool) {
	if n, ok := v.(int64); ok && n == 0 {
		return 0, true
	}
	return integer(1280, 9000)(p, key, v)
}

// setIPv4Network handles ipv4_network with ipv4_netmask (dotted, "/N" or "N"), or CIDR alone.
func setIPv4Network(p *parser, c *Config, v any) {
	s, ok := p.str("ipv4_network", v)
	if !ok {
		return
	}
	s = strings.TrimSpace(s)
	var mask *string
	if m, ok := p.vals["ipv4_netmask"]; ok {
		if ms, ok := m.(string); ok {
			mask = &ms
		} else {
			return // setIPv4Netmask reports the type
		}
	}
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if pfx, err = parseRoute(s); err != nil || !pfx.Addr().Is4() {
			p.errf("ipv4_network", "%q is not an IPv4 network", s)
			return
		}
		if mask != nil {
			if bits, err := parseMask(*mask); err != nil || bits != pfx.Bits() {
				p.errf("ipv4_netmask", "%q does not agree with ipv4_network %q", *mask, s)
				return
			}
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			p.errf("ipv4_network", "%q is not an IPv4 address", s)
			return
		}
		if mask == nil {
			p.errf("ipv4_network", "%q needs ipv4_netmask (or use CIDR, e.g. %s/24)", s, s)
			return
		}
		bits, err := parseMask(*mask)
		if err != nil {
			p.errf("ipv4_netmask", "%q is not a valid netmask", *mask)
			return
		}
		pfx = netip.PrefixFrom(a, bits)
	}
	if pfx.Bits() > 30 || pfx.Bits() < 8 {
		p.errf("ipv4_network", "%s: the pool must be between /8 and /30", pfx)
		return
	}
	c.IPv4Network = pfx.Masked()
}

// setIPv4Netmask checks ipv4_netmask's type and company; setIPv4Network applies it.
func setIPv4Netmask(p *parser, _ *Config, v any) {
	if _, ok := p.str("ipv4_netmask", v); ok {
		if _, ok := p.vals["ipv4_network"]; !ok {
			p.errf("ipv4_netmask", "set without ipv4_network")
		}
	}
}

// setIPv6Network handles ipv6_network (CIDR, or an address with ipv6_prefix) against ipv6_subnet_prefix, which
// the table applies before it.
func setIPv6Network(p *parser, c *Config, v any) {
	s, ok := p.str("ipv6_network", v)
	if !ok {
		return
	}
	s = strings.TrimSpace(s)
	var prefix *int
	if pv, ok := p.vals["ipv6_prefix"]; ok {
		n, ok := pv.(int64)
		if !ok {
			return // setIPv6Prefix reports the type
		}
		bits := int(n)
		prefix = &bits
	}
	var pfx netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		pfx, err = netip.ParsePrefix(s)
		if prefix != nil && err == nil && *prefix != pfx.Bits() {
			p.errf("ipv6_prefix", "%d does not agree with ipv6_network %q", *prefix, s)
			return
		}
	} else if prefix == nil {
		p.errf("ipv6_network", "%q needs a prefix length (e.g. %s/64)", s, s)
		return
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(s); err == nil {
			pfx, err = a.Prefix(*prefix)
		}
	}
	if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() {
		p.errf("ipv6_network", "%q is not an IPv6 network", s)
		return
	}
	sub := c.IPv6SubnetPrefix
	if sub < pfx.Bits()+1 || sub > 128 {
		p.errf("ipv6_subnet_prefix", "%d: want more than ipv6_network's /%d and at most 128", sub, pfx.Bits())
		return
	}
	if sub < 128 && sub > 124 {
		p.errf("ipv6_subnet_prefix", "%d: want 128 or at most 124", sub)
		return
	}
	c.IPv6Network = pfx.Masked()
}

// setIPv6Prefix checks ipv6_prefix's type and company; setIPv6Network applies it.
func setIPv6Prefix(p *parser, _ *Config, v any) {
	if _, ok := p.int64("ipv6_prefix", v); ok {
		if _, ok := p.vals["ipv6_network"]; !ok {
			p.errf("ipv6_prefix", "set without ipv6_network")
		}
	}
}

func parseUpstreams(p *parser, key string, in []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range in {
		s = strings.TrimSpace(s)
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(a, 53))
		} else if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
			out = append(out, ap)
		} else {
			p.errf(key, "%q: want an IP address or IP:PORT (e.g. \"127.0.0.53\" or \"[::1]:5353\")", s)
		}
	}
	return out
}

func parseDomains(p *parser, key string, in []string) []string {
	var out []string
	for _, d := range in {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d == "" || len(d) > 253 || strings.ContainsAny(d, " \t\r\n,;") {
			p.errf(key, "%q is not a domain name", d)
			continue
		}
		out = append(out, d)
	}
	return out
}

func parseRoutes(p *parser, key string, in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		if strings.EqualFold(strings.TrimSpace(s), "default") {
			out = append(out, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
			continue
		}
		pfx, err := parseRoute(s)
		if err != nil {
			p.errf(key, "%q is not a route (want CIDR, a.b.c.d/m.m.m.m or \"default\")", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

func parseAddrs(p *parser, key string, in []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			p.errf(key, "%q is not an IP address", s)
			continue
		}
		out = append(out, a)
	}
	return out
}

func parseCIDRs(p *parser, key string, in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		pfx, err := parseRoute(s)
		if err != nil {
			p.errf(key, "%q is not an address or CIDR", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// parseMask accepts "255.255.255.0", "/24" or "24" (contiguous masks only).
func parseMask(s string) (int, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "/")
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 32 {
			return 0, errors.New("prefix length out of range")
		}
		return n, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, errors.New("not a netmask")
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for m&0x80000000 != 0 {
		ones++
		m <<= 1
	}
	if m != 0 {
		return 0, errors.New("non-contiguous netmask")
	}
	return ones, nil
}

// parseRoute accepts CIDR (v4 or v6) and ocserv's "a.b.c.d/m.m.m.m"; host bits are cleared.
func parseRoute(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, mask, ok := strings.Cut(s, "/")
	if !ok {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	var bits int
	if a.Is4() && strings.Contains(mask, ".") {
		if bits, err = parseMask(mask); err != nil {
			return netip.Prefix{}, err
		}
	} else if bits, err = strconv.Atoi(mask); err != nil || bits < 0 || bits > a.BitLen() {
		return netip.Prefix{}, errors.New("bad prefix length")
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}
