package config

// Keys of the edge: what stands in front of the server. A load balancer speaking the PROXY protocol
// (listen_proxy_proto, trusted_proxies), and a proxy that terminates TLS itself and hands the plain HTTP on
// (listen_clear_file, listen_clear).

import (
	"net"
	"net/netip"
)

var edgeKeys = []key{
	{name: "listen_proxy_proto", def: "false", field: "ListenProxyProto", conv: boolean,
		doc: "Expect a PROXY protocol (v1 or v2) header on every TCP connection from trusted_proxies, as HAProxy's\n" +
			"send-proxy-v2 sends it, and the listen_clear_file and listen_clear listeners: its source address is the\n" +
			"client's everywhere (logs, bans, pre-login limits, IP_REAL, occtl). A trusted peer that sends no header, or\n" +
			"another peer that sends one, has its connection closed (logged). Other peers connect directly as usual."},
	{name: "trusted_proxies", def: "[]", ex: `["10.0.0.2/32"]`, field: "TrustedProxies", conv: list(parseCIDRs),
		doc: "Addresses (CIDRs) of the balancers and proxies whose PROXY header (listen_proxy_proto) and, on the clear\n" +
			"listeners, X-Forwarded-For are believed. Empty: loopback only (127.0.0.0/8 and ::1). Peers of\n" +
			"listen_clear_file are always trusted: the socket's file permissions decide who connects."},
	{name: "listen_clear_file", def: `""`, ex: `"/run/ocgate/clear.socket"`, field: "ListenClearFile", conv: path,
		doc: "A unix socket taking plain HTTP from a proxy in front that terminated the clients' TLS (ocserv's\n" +
			"listen-clear-file). The client's address comes from the PROXY header (listen_proxy_proto) or the\n" +
			"proxy's X-Forwarded-For. DTLS is not offered on such connections (there is no TLS session to key it\n" +
			"from): the client runs TLS only. Empty: off."},
	{name: "listen_clear", def: `""`, ex: `"127.0.0.1:8080"`, field: "ListenClear", conv: listenAddr("127.0.0.1:8080"),
		doc: "HOST:PORT of a TCP listener taking plain HTTP, as listen_clear_file, for proxies that cannot reach a\n" +
			"unix socket. Only a loopback address unless listen_clear_remote = true. Empty: off."},
	{name: "listen_clear_remote", def: "false", field: "ListenClearRemote", conv: boolean,
		doc: "Allow listen_clear on an address other than loopback: then anyone who reaches it bypasses TLS, so\n" +
			"firewall it to the proxy."},
}

// ocgateEdgeOnly are the edge keys ocserv does not have (see ocgateOnly).
var ocgateEdgeOnly = []string{"trusted_proxies", "listen_clear", "listen_clear_remote"}

func init() {
	for _, n := range ocgateEdgeOnly {
		ocgateOnly[n] = true
	}
}

// checkEdge refuses a listen_clear that anyone but this host could reach, unless listen_clear_remote says so.
func (p *parser) checkEdge(c *Config) {
	if c.ListenClear == "" || c.ListenClearRemote {
		return
	}
	host, _, _ := net.SplitHostPort(c.ListenClear)
	if a, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !a.IsLoopback()) {
		p.errf("listen_clear", "%q is not a loopback address: plain HTTP there bypasses TLS for anyone who reaches it "+
			"(set listen_clear_remote = true to allow it)", c.ListenClear)
	}
}

// Trusts reports whether a is a trusted proxy (trusted_proxies; loopback when the list is empty).
func (c *Config) Trusts(a netip.Addr) bool {
	a = a.Unmap()
	if len(c.TrustedProxies) == 0 {
		return a.IsLoopback()
	}
	for _, p := range c.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
