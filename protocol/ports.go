package protocol

// restrict_user_to_ports: the facts the datapath's policy gets (egress decides) and the scripts' variables.

import (
	"strconv"
	"strings"

	"ocgate/config"
	"ocgate/protocol/datapath"
)

// portRules returns the session's restrict_user_to_ports for the datapath (the zero value without rules). The
// exception for DNS to the pushed servers is the policy's, from datapath.Session.DNS.
func (s *Session) portRules() datapath.PortRules {
	if s.ucfg == nil || s.ucfg.Ports.Empty() {
		return datapath.PortRules{}
	}
	r := datapath.PortRules{Deny: s.ucfg.Ports.Deny, Rules: make([]datapath.PortRule, len(s.ucfg.Ports.Rules))}
	for i, x := range s.ucfg.Ports.Rules {
		r.Rules[i] = datapath.PortRule(x)
	}
	return r
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
