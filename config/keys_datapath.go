package config

// Keys of the datapath: which one, what sessions may reach, the netstack's limits, and the SOCKS5 ingress.

import (
	"net"
	"net/netip"
	"strconv"
)

var datapathKeys = []key{
	{name: "datapath", def: `"netstack"`, field: "Datapath", conv: oneOf("netstack", "tun"),
		doc: "Data path: \"netstack\" (no root, no TUN) or \"tun\" (kernel TUN per session)."},
	{name: "egress_allow", def: "[]", field: "EgressAllow", conv: list(parseCIDRs), netstack: true,
		doc: "Netstack: CIDRs reachable although loopback/link-local/multicast are refused by default (e.g.\n" +
			"\"127.0.0.1/32\"). With the tun datapath the host's routes and firewall decide."},
	{name: "egress_deny", def: "[]", field: "EgressDeny", conv: list(parseCIDRs), netstack: true,
		doc: "Netstack: CIDRs refused for everyone. With the tun datapath the host's routes and firewall decide."},
	{name: "icmp_echo", def: `"auto"`, field: "ICMPEcho", conv: oneOf("auto", "socket", "raw", "exec", "off"), netstack: true,
		doc: "How the netstack re-originates clients' pings: \"socket\" (unprivileged ICMP socket, if ping_group_range\n" +
			"allows), \"raw\" (CAP_NET_RAW), \"exec\" (the system ping), \"off\"; \"auto\" takes the first that works."},
	{name: "flow_log", def: `""`, field: "FlowLog", conv: flowLog, netstack: true,
		doc: "Netstack flow log: one JSON line per ended or refused TCP/UDP flow (user, addresses, bytes each way,\n" +
			"duration, reason). A file, or \"-\" for standard error. Empty: off."},
	{name: "restrict_user_to_ports", def: `""`, scope: anyFile, field: "RestrictUserToPorts", conv: ports,
		user: userPorts,
		doc: "Destination ports sessions may reach, ocserv syntax: only these, e.g. \"tcp(443), udp(53), icmp()\", or all\n" +
			"but these, \"!(tcp(25), udp(161))\". Protocols: tcp, udp and sctp with a port; icmp, icmpv6 and esp without.\n" +
			"Enforced in-process: TCP is reset, UDP dropped, pings get ICMP administratively prohibited (tun datapath: every\n" +
			"packet from the client is checked, refused ones dropped). The server's in-pool address and DNS to the DNS\n" +
			"servers pushed to the user are exempt. A per-user list replaces this one. Empty: no restriction."},
	{name: "max_flows_per_session", def: "1024", field: "MaxFlowsPerSession", conv: integer(1, 1<<20), netstack: true,
		doc: "Netstack: concurrent TCP and UDP flows per session; new ones beyond are refused (TCP reset, UDP dropped)."},
	{name: "max_half_open_per_session", def: "64", field: "MaxHalfOpenPerSession", conv: integer(1, 1<<20), netstack: true,
		doc: "Netstack: TCP flows per session still being connected from the host (half-open); new ones beyond are reset."},
	{name: "max_dials_in_flight", def: "1024", field: "MaxDialsInFlight", conv: integer(1, 1<<20), netstack: true,
		doc: "Netstack: TCP connections being opened from the host at once, whole server; new flows beyond are reset."},
	{name: "tcp_keepalive", def: "30", field: "TCPKeepalive", conv: seconds(0), netstack: true,
		doc: "Netstack: idle time before TCP keepalive probes on the host side of TCP flows (0: no keepalive)."},
	{name: "udp_idle_timeout", def: "60", field: "UDPIdleTimeout", conv: seconds(1), netstack: true,
		doc: "Netstack: a UDP flow ends after this much time without a datagram either way."},

	{name: "socks5_listen", def: `""`, field: "SOCKS5Listen", conv: listenAddr("127.0.0.1:1080"),
		doc: "SOCKS5 ingress (netstack datapath only; ignored with a warning in tun mode, where the kernel routes to the\n" +
			"clients): HOST:PORT where host applications open TCP connections to VPN clients' addresses, and only those,\n" +
			"through the stack (CONNECT to literal addresses; the client sees a connection from the server's in-pool\n" +
			"address), e.g. \"127.0.0.1:1080\". Empty: off."},
	{name: "socks5_user", def: `""`, field: "SOCKS5User", conv: text,
		doc: "Username the SOCKS5 ingress requires (RFC 1929), with socks5_password. Empty: no authentication."},
	{name: "socks5_password", def: `""`, doc: "Password of socks5_user.", field: "SOCKS5Password", conv: text},
}

// flowLog is a file name, or "-" for standard error.
func flowLog(p *parser, key string, v any) (any, bool) {
	if s, ok := v.(string); ok && s == "-" {
		return s, true
	}
	return path(p, key, v)
}

func ports(p *parser, key string, v any) (any, bool) {
	s, ok := p.str(key, v)
	if !ok {
		return nil, false
	}
	var r PortRules
	n := len(p.errs)
	p.ports(key, &r, &s)
	return r, len(p.errs) == n
}

// listenAddr converts a listener's HOST:PORT (socks5_listen, listen_clear), the host an IP address or "localhost";
// "" is off. example is shown in the errors.
func listenAddr(example string) conv {
	return func(p *parser, key string, v any) (any, bool) {
		s, ok := p.str(key, v)
		if !ok || s == "" {
			return s, ok
		}
		host, port, err := net.SplitHostPort(s)
		n, perr := strconv.Atoi(port)
		_, aerr := netip.ParseAddr(host)
		switch {
		case err != nil:
			p.errf(key, "%q: want HOST:PORT, e.g. %q", s, example)
		case perr != nil || n < 1 || n > 65535:
			p.errf(key, "%q: the port must be 1 to 65535", s)
		case host == "":
			p.errf(key, "%q: give the address to listen on, e.g. %q (use \"0.0.0.0:%d\" to listen on every address)", s, example, n)
		case host != "localhost" && aerr != nil:
			p.errf(key, "%q: the host must be an IP address or \"localhost\"", s)
		default:
			return s, true
		}
		return nil, false
	}
}
