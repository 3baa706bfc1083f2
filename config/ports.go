package config

// restrict_user_to_ports, in ocserv's syntax (src/config-ports.c):
//
//	"tcp(443), tcp(80), udp(443), sctp(99), icmp(), icmpv6(), esp()"   only these may pass
//	"!(tcp(443), tcp(80))"                                             these may not; everything else may
//
// Protocol names are case-insensitive; tcp, udp and sctp take a destination port (1 to 65535), icmp, icmpv6 and
// esp take none (the whole protocol). A leading '!' must be followed by '(' and applies to the whole list.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// IP protocol numbers of restrict_user_to_ports.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoESP    uint8 = 50
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// portProtos are the names ocserv accepts, in the order it tries them ("icmpv6" before "icmp").
var portProtos = []struct {
	name  string
	proto uint8
	port  bool // takes a port
}{
	{"tcp", ProtoTCP, true}, {"udp", ProtoUDP, true}, {"sctp", ProtoSCTP, true},
	{"icmpv6", ProtoICMPv6, false}, {"icmp", ProtoICMP, false}, {"esp", ProtoESP, false},
}

// PortRule is one entry of restrict_user_to_ports.
type PortRule struct {
	Proto uint8  // IP protocol number (ProtoTCP...)
	Port  uint16 // destination port for TCP, UDP and SCTP; 0 for ICMP, ICMPv6 and ESP (the whole protocol)
}

// PortRules is a parsed restrict_user_to_ports. The zero value restricts nothing.
type PortRules struct {
	// Deny is the "!(...)" form: the listed ports are refused and everything else passes. Otherwise only the
	// listed ports pass.
	Deny  bool
	Rules []PortRule
}

func (r PortRules) clone() PortRules { return PortRules{Deny: r.Deny, Rules: slices.Clone(r.Rules)} }

// Empty reports whether r restricts nothing.
func (r PortRules) Empty() bool { return len(r.Rules) == 0 }

// String returns r in ocserv's syntax ("" without rules).
func (r PortRules) String() string {
	if len(r.Rules) == 0 {
		return ""
	}
	parts := make([]string, len(r.Rules))
	for i, x := range r.Rules {
		name, port := protoName(x.Proto)
		if port {
			parts[i] = fmt.Sprintf("%s(%d)", name, x.Port)
		} else {
			parts[i] = name + "()"
		}
	}
	s := strings.Join(parts, ", ")
	if r.Deny {
		return "!(" + s + ")"
	}
	return s
}

// protoName returns the ocserv name of proto and whether it takes a port.
func protoName(proto uint8) (string, bool) {
	for _, p := range portProtos {
		if p.proto == proto {
			return p.name, p.port
		}
	}
	return strconv.Itoa(int(proto)), false
}

// ProtoName returns the ocserv name of an IP protocol of restrict_user_to_ports ("tcp", "icmpv6"...).
func ProtoName(proto uint8) string {
	name, _ := protoName(proto)
	return name
}

// ParsePorts parses restrict_user_to_ports. An empty (or blank) string gives no rules.
func ParsePorts(s string) (PortRules, error) {
	var r PortRules
	s = strings.TrimSpace(s)
	if s == "" {
		return r, nil
	}
	if rest, ok := strings.CutPrefix(s, "!"); ok {
		rest = strings.TrimSpace(rest)
		inner, ok := strings.CutPrefix(rest, "(")
		if !ok {
			return r, errors.New(`"!" must be followed by "(", as in "!(tcp(22), udp(53))"`)
		}
		inner = strings.TrimSpace(inner)
		if strings.Count(inner, ")") != strings.Count(inner, "(")+1 || !strings.HasSuffix(inner, ")") {
			return r, errors.New(`"!(" without its closing ")" at the end`)
		}
		r.Deny, s = true, inner[:len(inner)-1]
	}
	for entry := range strings.SplitSeq(s, ",") {
		x, err := parsePortRule(strings.TrimSpace(entry))
		if err != nil {
			return PortRules{}, err
		}
		r.Rules = append(r.Rules, x)
	}
	return r, nil
}

func parsePortRule(e string) (PortRule, error) {
	if e == "" {
		return PortRule{}, errors.New("empty entry (two commas, or a comma at an end)")
	}
	for _, p := range portProtos {
		if len(e) < len(p.name) || !strings.EqualFold(e[:len(p.name)], p.name) {
			continue
		}
		args, ok := strings.CutPrefix(strings.TrimSpace(e[len(p.name):]), "(")
		if !ok {
			return PortRule{}, fmt.Errorf("%q: expected \"(\" after %s", e, p.name)
		}
		args, ok = strings.CutSuffix(args, ")")
		if !ok || strings.ContainsAny(args, "()") {
			return PortRule{}, fmt.Errorf("%q: expected one \")\" at the end (entries are separated by commas)", e)
		}
		args = strings.TrimSpace(args)
		if !p.port {
			if args != "" {
				return PortRule{}, fmt.Errorf("%q: %s takes no port, write %s()", e, p.name, p.name)
			}
			return PortRule{Proto: p.proto}, nil
		}
		n, err := strconv.Atoi(args)
		if err != nil || n < 1 || n > 65535 {
			return PortRule{}, fmt.Errorf("%q: %s needs a port from 1 to 65535, as in %s(443)", e, p.name, p.name)
		}
		return PortRule{Proto: p.proto, Port: uint16(n)}, nil
	}
	return PortRule{}, fmt.Errorf("%q: unknown protocol (want tcp, udp, sctp, icmp, icmpv6 or esp)", e)
}

// ports parses key's value into *dst when present.
func (p *parser) ports(key string, dst *PortRules, v *string) {
	if v == nil {
		return
	}
	r, err := ParsePorts(*v)
	if err != nil {
		p.errf(key, "%v", err)
		return
	}
	*dst = r
}

// mergePorts adds a per-user or per-group file's rules to the ones already read (ocserv appends the group file's
// and the user file's entries to one list). As in ocserv, which exports the whole list as OCSERV_DENY_PORTS as
// soon as one entry is negated, a "!(...)" list in either file makes every entry a denied one; the returned
// warning says so.
func mergePorts(acc *PortRules, add PortRules) (warning string) {
	if add.Empty() {
		return ""
	}
	if !acc.Empty() && acc.Deny != add.Deny {
		warning = fmt.Sprintf("combined with %q from another file: as in ocserv, a \"!(...)\" list makes every listed port a denied one", acc.String())
	}
	acc.Deny = acc.Deny || add.Deny
	acc.Rules = append(acc.Rules, add.Rules...)
	return warning
}
