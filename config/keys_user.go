package config

// Keys of per-user and per-group configuration: where the files are, the policy keys users may have their own
// value of, and the keys only those files may set. The appliers below (user funcs) are the per-user side of keys
// declared in any keys_*.go file.

import (
	"net/netip"
	"strconv"
	"strings"
)

var userKeys = []key{
	{name: "config_per_user", def: `""`, field: "ConfigPerUser", conv: path,
		doc: "Directory of per-user files, each named after a user, with the keys allowed per user (route, no_route,\n" +
			"iroute, dns, explicit_ipv4, restrict_user_to_routes, timeouts, rates...). Read at each login. Empty: none."},
	{name: "config_per_group", def: `""`, field: "ConfigPerGroup", conv: path,
		doc: "Directory of per-group files, each named after a group; applied before the user's file. Empty: none."},
	{name: "default_user_config", def: `""`, field: "DefaultUserConfig", conv: path,
		doc: "Used when config_per_user has no file for the user."},
	{name: "default_group_config", def: `""`, field: "DefaultGroupConfig", conv: path,
		doc: "Used when config_per_group has no file for the session's group."},
	{name: "restrict_user_to_routes", def: "false", scope: anyFile, field: "RestrictUserToRoutes", conv: boolean,
		userField: "RestrictToRoutes", doc: "Sessions may only reach their routes (minus no_route)."},
	{name: "client_to_client", def: "true", scope: anyFile, field: "ClientToClient", conv: boolean,
		userField: "ClientToClient", doc: "Sessions may reach each other's addresses (an ocgate key)."},
	{name: "expose_iroutes", def: "false", field: "ExposeIRoutes", conv: boolean,
		doc: "Push every user's iroutes (from config_per_user) to the other users as routes."},
	{name: "iroute", ex: `["192.168.50.0/24"]`, scope: userOnly, user: userIRoutes,
		doc: "Networks behind this client, routed to its session."},
	{name: "explicit_ipv4", ex: `"10.250.77.9"`, scope: userOnly, user: userExplicitIPv4,
		doc: "The fixed address of this user, inside ipv4_network (the session's own when a file sets one)."},
	{name: "explicit_ipv6", ex: `"fd00:77::9"`, scope: userOnly, user: userExplicitIPv6,
		doc: "The fixed IPv6 address of this user, inside ipv6_network; with ipv6_subnet_prefix below 128, the\n" +
			"address of a client prefix (its ::1, the address the client gets)."},
	{name: "hostname", ex: `"laptop-7"`, scope: userOnly, user: userHostname,
		doc: "The host name the CONNECT response gives the client (X-CSTP-Hostname) instead of echoing the one the\n" +
			"client announced."},
}

// userState is what a per-user or per-group file is applied to.
type userState struct {
	c *Config     // the global configuration (read only)
	u *UserConfig // single values
	l *userLists  // lists, added up over the group and user files
}

func userRoutes(p *parser, s *userState, v any) {
	s.l.setRoutes = true
	if r, ok := list(parseRoutes)(p, "route", v); ok {
		s.l.routes = append(s.l.routes, r.([]netip.Prefix)...)
	}
}

func userNoRoutes(p *parser, s *userState, v any) {
	s.l.setNoRoutes = true
	if r, ok := list(parseRoutes)(p, "no_route", v); ok {
		s.l.noRoutes = append(s.l.noRoutes, r.([]netip.Prefix)...)
	}
}

func userDNS(p *parser, s *userState, v any) {
	s.l.setDNS = true
	if a, ok := list(parseAddrs)(p, "dns", v); ok {
		s.l.dns = append(s.l.dns, a.([]netip.Addr)...)
	}
}

// userFamilyDNS applies ipv4_dns or ipv6_dns in a per-user or per-group file: added to the session's dns list.
func userFamilyDNS(family int) func(p *parser, s *userState, v any) {
	name := "ipv" + strconv.Itoa(family) + "_dns"
	return func(p *parser, s *userState, v any) {
		s.l.setDNS = true
		if a, ok := familyAddrs(p, name, family, v); ok {
			s.l.dns = append(s.l.dns, a...)
		}
	}
}

// userNBNS applies nbns, ipv4_nbns or ipv6_nbns (key) in a per-user or per-group file.
func userNBNS(key string) func(p *parser, s *userState, v any) {
	return func(p *parser, s *userState, v any) {
		s.l.setNBNS = true
		if a, ok := list(parseAddrs)(p, key, v); ok {
			s.l.nbns = append(s.l.nbns, a.([]netip.Addr)...)
		}
	}
}

func userSplitDNS(p *parser, s *userState, v any) {
	s.l.setSplitDNS = true
	if d, ok := list(parseDomains)(p, "split_dns", v); ok {
		s.l.splitDNS = append(s.l.splitDNS, d.([]string)...)
	}
}

func userHostname(p *parser, s *userState, v any) {
	str, ok := p.str("hostname", v)
	if !ok {
		return
	}
	if h := strings.TrimSuffix(strings.TrimSpace(str), "."); ValidHostname(h) {
		s.u.Hostname = h
	} else {
		p.errf("hostname", "%q is not a host name (letters, digits, '-', '_' and '.', at most 253)", str)
	}
}

// ValidHostname accepts the host names a CONNECT response may carry (the client's X-CSTP-Hostname, checked the
// same way).
func ValidHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func userPorts(p *parser, s *userState, v any) {
	r, ok := ports(p, "restrict_user_to_ports", v)
	if !ok {
		return
	}
	if w := mergePorts(&s.l.ports, r.(PortRules)); w != "" {
		p.warnf("restrict_user_to_ports", "%s", w)
	}
}

func userIRoutes(p *parser, s *userState, v any) {
	in, ok := p.strs("iroute", v)
	if !ok {
		return
	}
	for _, pfx := range parseCIDRs(p, "iroute", in) {
		switch {
		case pfx.Bits() == 0:
			p.errf("iroute", "%s: a default route cannot be an iroute", pfx)
		default:
			s.u.IRoutes = append(s.u.IRoutes, pfx)
		}
	}
}

// userExplicitIPv4 takes explicit_ipv4; checkExplicit checks it against the session's pool once the file is read.
func userExplicitIPv4(p *parser, s *userState, v any) {
	str, ok := p.str("explicit_ipv4", v)
	if !ok {
		return
	}
	a, err := netip.ParseAddr(strings.TrimSpace(str))
	if err != nil || !a.Unmap().Is4() {
		p.errf("explicit_ipv4", "%q: not an IPv4 address", str)
		return
	}
	s.u.ExplicitIPv4 = a.Unmap()
}

// userExplicitIPv6 takes explicit_ipv6; checkExplicit checks it against the session's pool once the file is read.
func userExplicitIPv6(p *parser, s *userState, v any) {
	str, ok := p.str("explicit_ipv6", v)
	if !ok {
		return
	}
	a, err := netip.ParseAddr(strings.TrimSpace(str))
	if err != nil || !a.Is6() || a.Is4In6() {
		p.errf("explicit_ipv6", "%q: not an IPv6 address", str)
		return
	}
	s.u.ExplicitIPv6 = a
}
