package protocol

// restrict_user_to_ports: the datapath's check (datapath.Session.AllowPort) and the scripts' variables.

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"ocgate/config"
)

// allowPort returns the session's restrict_user_to_ports check for the datapath, nil without rules. As under
// ocserv's firewall script (ocserv-fw), which accepts DNS to the pushed DNS servers before the port rules, TCP
// and UDP port 53 to those servers stay allowed.
func (s *Session) allowPort() func(proto uint8, dst netip.AddrPort) bool {
	if s.ucfg == nil || s.ucfg.Ports.Empty() {
		return nil
	}
	rules, dns := s.ucfg.Ports, slices.Clone(s.pcfg.dns)
	return func(proto uint8, dst netip.AddrPort) bool {
		if dst.Port() == 53 && (proto == config.ProtoTCP || proto == config.ProtoUDP) && slices.Contains(dns, dst.Addr()) {
			return true
		}
		return rules.Allows(proto, dst.Port())
	}
}

// appendPortsEnv adds OCSERV_ALLOW_PORTS, or OCSERV_DENY_PORTS for a "!(...)" list, as ocserv exports them
// (src/main-user.c): "tcp 443 udp 53 sctp 99 icmp all esp all icmpv6 all ", each entry followed by a space.
func appendPortsEnv(env []string, uc *config.UserConfig) []string {
	if uc == nil || uc.Ports.Empty() {
		return env
	}
	var b strings.Builder
	for _, r := range uc.Ports.Rules {
		b.WriteString(config.ProtoName(r.Proto) + " ")
		switch r.Proto {
		case config.ProtoTCP, config.ProtoUDP, config.ProtoSCTP:
			b.WriteString(strconv.Itoa(int(r.Port)) + " ")
		default:
			b.WriteString("all ")
		}
	}
	if uc.Ports.Deny {
		return append(env, "OCSERV_DENY_PORTS="+b.String())
	}
	return append(env, "OCSERV_ALLOW_PORTS="+b.String())
}
