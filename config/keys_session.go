package config

// Keys of a session's life: timeouts, limits, bans, banners and compression.

import (
	"strconv"
	"strings"
)

var sessionKeys = []key{
	{name: "keepalive", def: "32400", scope: anyFile, field: "Keepalive", conv: seconds(0), userField: "Keepalive",
		doc: "Client keepalive interval."},
	{name: "dpd", def: "90", scope: anyFile, field: "DPD", conv: seconds(0), userField: "DPD",
		doc: "Dead peer detection interval."},
	{name: "mobile_dpd", def: "1800", scope: anyFile, field: "MobileDPD", conv: seconds(0), userField: "MobileDPD",
		doc: "Dead peer detection interval for mobile clients."},
	{name: "idle_timeout", def: "0", scope: anyFile, field: "IdleTimeout", conv: seconds(0), userField: "IdleTimeout",
		doc: "Disconnect after this much time without traffic (0: never)."},
	{name: "mobile_idle_timeout", def: "0", scope: anyFile, field: "MobileIdleTimeout", conv: seconds(0),
		userField: "MobileIdleTimeout", doc: "The same for mobile clients."},
	{name: "session_timeout", def: "0", scope: anyFile, field: "SessionTimeout", conv: seconds(0),
		userField: "SessionTimeout", doc: "Hard session limit (0: none)."},
	{name: "cookie_timeout", def: "300", field: "CookieTimeout", conv: seconds(0),
		doc: "How long a cookie stays valid after its connection is lost."},
	{name: "auth_timeout", def: "240", field: "AuthTimeout", conv: seconds(1),
		doc: "Time allowed from the TCP connection to a successful login (TLS handshake and authentication requests).\n" +
			"ocserv's default: long enough for a user typing a password and a one-time code."},
	{name: "request_timeout", def: "10", field: "RequestTimeout", conv: seconds(1),
		doc: "Before login: time allowed for the TLS handshake, and for each HTTP request's header and body once its\n" +
			"first byte has arrived (waiting for the next request counts against auth_timeout only)."},
	{name: "switch_to_tcp_timeout", def: "25", field: "SwitchToTCPTimeout", conv: seconds(0),
		doc: "Send over TLS after this much DTLS silence."},
	{name: "persistent_cookies", def: "false", field: "PersistentCookies", conv: boolean,
		doc: "Keep the cookie valid after a user logout."},
	{name: "deny_roaming", def: "false", scope: anyFile, field: "DenyRoaming", conv: boolean, userField: "DenyRoaming",
		doc: "Bind cookies to the client address that authenticated."},

	{name: "max_clients", def: "1024", field: "MaxClients", conv: integer(0, 1<<24),
		doc: "Maximum sessions, i.e. logged-in users (0: unlimited). Connections still authenticating do not count\n" +
			"(see max_unauth_clients); a login over the limit is refused with a message the client shows."},
	{name: "max_unauth_clients", def: "1024", field: "MaxUnauthClients", conv: integer(0, 1<<24),
		doc: "Maximum connections not logged in yet (0: unlimited). Over it, new connections are closed before the TLS\n" +
			"handshake."},
	{name: "max_unauth_per_ip", def: "16", field: "MaxUnauthPerIP", conv: integer(0, 1<<24),
		doc: "Maximum connections not logged in yet from one address (IPv6: one /64) (0: unlimited). Over it, new\n" +
			"connections from that address are closed before the TLS handshake."},
	{name: "max_same_clients", def: "2", scope: anyFile, field: "MaxSameClients", conv: integer(0, 1<<24),
		userField: "MaxSameClients", doc: "Maximum sessions per user (0: unlimited)."},
	{name: "rate_limit_ms", def: "100", field: "RateLimitMS", conv: integer(0, 60000),
		doc: "New connections per source address (IPv6: per /64): one per this many milliseconds on average, in bursts\n" +
			"of up to 20; a connection over the rate is closed at once (0: no limit). Unlike ocserv, which paces its\n" +
			"accept loop for everyone, so that one source's backlog delays every other user."},
	{name: "rx_data_per_sec", def: "0", scope: anyFile, field: "RxDataPerSec", conv: integer(0, 1<<40),
		userField: "RxDataPerSec", doc: "Bytes per second a session may send (0: unlimited); excess packets are dropped."},
	{name: "tx_data_per_sec", def: "0", scope: anyFile, field: "TxDataPerSec", conv: integer(0, 1<<40),
		userField: "TxDataPerSec", doc: "Bytes per second sent to a session (0: unlimited); excess packets are dropped."},

	{name: "max_ban_score", def: "80", field: "MaxBanScore", conv: integer(0, 1<<30),
		doc: "Ban an address once its score reaches this (0: never)."},
	{name: "ban_reset_time", def: "1200", field: "BanResetTime", conv: seconds(0),
		doc: "Forget an address's score after this long."},
	{name: "min_reauth_time", ex: "300", field: "BanTime", conv: seconds(0),
		doc: "ocserv's older name for ban_time; ban_time wins when both are set."},
	{name: "ban_time", def: "300", field: "BanTime", conv: seconds(0), doc: "How long a ban lasts."},
	{name: "ban_points_wrong_password", def: "10", field: "BanPointsWrongPassword", conv: integer(0, 1<<30),
		doc: "Points for a wrong password."},
	{name: "ban_points_connection", def: "1", field: "BanPointsConnection", conv: integer(0, 1<<30),
		doc: "Points for a connection, and as many again for a failed TLS handshake (ocserv scores no handshake failure;\n" +
			"ocgate does, so that floods of random bytes from one address are banned)."},
	{name: "ban_points_kkdcp", def: "1", field: "BanPointsKKDCP", conv: integer(0, 1<<30),
		doc:   "Points for a KKDCP request. KKDCP is not supported, so no request scores.",
		inert: "has no effect: KKDCP is not supported"},

	{name: "server_drain_ms", def: "0", field: "ServerDrainMS", conv: integer(0, 3600000),
		doc: "On SIGTERM, report not ready (/readyz), stop accepting connections and keep serving the sessions for\n" +
			"this many milliseconds before ending them (set it above a load balancer's health-check interval); then\n" +
			"sessions get TERMINATE and the process exits within 5 s more. A second signal ends them at once."},

	{name: "banner", def: `""`, doc: "Text shown after login.", field: "Banner", conv: text},
	{name: "pre_login_banner", def: `""`, doc: "Text shown with the login form.", field: "PreLoginBanner", conv: text},
	{name: "compression", def: "false", field: "Compression", conv: boolean,
		doc: "Offer stateless LZS and LZ4 (oc-lz4) compression to clients that ask for it, on TLS and DTLS.\n" +
			"Off by default: compressing before encrypting lets an observer learn about the traffic from its sizes."},
	{name: "no_compress_limit", def: "256", field: "NoCompressLimit", set: noCompressLimit,
		doc: "With compression, packets shorter than this many bytes are sent uncompressed (low latency for\n" +
			"small packets such as VoIP). Values below 64 count as 64, as in ocserv."},
	{name: "compression_algo_priority", ex: `["lzs:100"]`, field: "CompressionAlgoPriority", conv: algoPriorities,
		doc: "\"NAME:PRIORITY\" entries (a string or an array of them) that change which codec wins when a client\n" +
			"offers several: the highest priority does. Defaults: oc-lz4 90, lzs 80."},
}

// noCompressLimit applies no_compress_limit, raised to ocserv's minimum of 64.
func noCompressLimit(p *parser, c *Config, v any) {
	if n, ok := integer(0, 65535)(p, "no_compress_limit", v); ok {
		c.NoCompressLimit = max(n.(int), 64)
	}
}

// algoPriorities converts compression_algo_priority: ocserv's "NAME:PRIORITY" (the name case-insensitive, the
// priority above 0), one string or an array of them, into priorities by lower-case name.
func algoPriorities(p *parser, key string, v any) (any, bool) {
	var in []string
	if s, ok := v.(string); ok {
		in = []string{s}
	} else if in, ok = p.strs(key, v); !ok {
		return nil, false
	}
	out := map[string]int{}
	for _, e := range in {
		name, prio, _ := strings.Cut(e, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		n, err := strconv.Atoi(strings.TrimSpace(prio))
		if name != "lzs" && name != "oc-lz4" || err != nil || n <= 0 {
			p.errf(key, "%q: want \"NAME:PRIORITY\" with NAME lzs or oc-lz4 and PRIORITY above 0", e)
			return nil, false
		}
		out[name] = n
	}
	return out, true
}
