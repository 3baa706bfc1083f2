package config

import (
	"fmt"
	"strings"
)

// ignoredKeys are ocserv options that make no sense for ocgate: accepted, with a warning saying why.
var ignoredKeys = map[string]string{
	"tls_priorities":            "Go's TLS stack is configured by ocgate (TLS 1.2 and 1.3)",
	"isolate_workers":           "ocgate does not fork workers",
	"socket_file":               "ocgate does not fork workers",
	"chroot_dir":                "not supported",
	"use_occtl":                 "the management socket is always on",
	"use_utmp":                  "not supported",
	"listen_netns":              "run ocgate in the namespace instead",
	"sec_mod_scale":             "ocgate does not fork a security module per core",
	"dtls_legacy":               "DTLS 0.9 is not supported",
	"cisco_client_compat":       "not needed",
	"cisco_svc_client_compat":   "not supported",
	"match_tls_dtls_ciphers":    "DTLS ciphers are negotiated by PSK",
	"dtls_psk":                  "PSK-NEGOTIATE is always on",
	"ocsp_response":             "not supported",
	"pin_file":                  "PKCS#11 keys are not supported",
	"srk_pin_file":              "TPM keys are not supported",
	"key_pin":                   "PKCS#11 keys are not supported",
	"srk_pin":                   "TPM keys are not supported",
	"server_stats_reset_time":   "not supported",
	"log_level":                 "use --log-level",
	"syslog_facility":           "ocgate logs to stderr",
	"cgroup":                    "not supported",
	"limit_worker_memory":       "ocgate does not fork workers",
	"included_http_headers":     "not supported",
	"ping_leases":               "not needed",
	"net_priority":              "not supported",
	"output_buffer":             "not needed",
	"rekey_time":                "Go's TLS cannot renegotiate; ocgate advertises no rekey",
	"rekey_method":              "Go's TLS cannot renegotiate; ocgate advertises no rekey",
	"kkdcp":                     "Kerberos is not supported",
	"udp_listen_host_is_dyndns": "not supported",
	"listen_host_is_dyndns":     "not supported",
	"server_drain_ms":           "not supported yet",
	"predictable_ips":           "addresses are always predictable when free",
	"cert_user_oid":             "certificate authentication is not supported yet",
	"cert_group_oid":            "certificate authentication is not supported yet",
	"crl":                       "certificate authentication is not supported yet",
}

// notYetKeys are ocserv options ocgate intends to implement; accepted with a warning for now.
var notYetKeys = map[string]bool{
	"ipv6_netmask": true, "ipv4_dns": true, "ipv6_dns": true, "nbns": true,
	"select_group": true, "auto_select_group": true, "default_select_group": true, "select_group_by_url": true,
	"listen_proxy_proto": true, "camouflage": true, "camouflage_secret": true, "camouflage_realm": true,
	"stats_report_time": true, "custom_header": true, "user_profile": true,
	"proxy_url": true, "hostname": true, "acct": true, "enable_auth": true, "explicit_ipv6": true,
	"client_bypass_protocol": true, "dtls_mtu": true, "route_add_cmd": true, "route_del_cmd": true,
	"compression_algo_priority": true, "max_ban_score_ip": true, "restrict_user_to_routes_cmd": true,
}

// userOnlyKeys may appear only in per-user and per-group files; the global file refuses them.
var userOnlyKeys = []string{"iroute", "explicit_ipv4"}

// userKeys are the keys a per-user or per-group file may set, and what they do there:
//   - "": implemented (a field of UserConfig);
//   - "not yet": an ocserv per-user option that ocgate accepts with a warning, like notYetKeys globally;
//   - anything else: an ocserv per-user option that is ignored, with the reason as the warning.
//
// The list is ocserv's (src/sup-config/file.c) with '-' replaced by '_', plus ocgate's client_to_client. Any other
// key known to the global file is an error in these files ("not allowed"), and so is an unknown key.
var userKeys = map[string]string{
	"route": "", "no_route": "", "iroute": "", "dns": "",
	"restrict_user_to_routes": "", "client_to_client": "", "restrict_user_to_ports": "",
	"rx_data_per_sec": "", "tx_data_per_sec": "",
	"idle_timeout": "", "mobile_idle_timeout": "", "session_timeout": "",
	"dpd": "", "mobile_dpd": "", "keepalive": "",
	"explicit_ipv4": "", "max_same_clients": "",

	"no_udp": "not yet", "deny_roaming": "not yet", "mtu": "not yet",
	"ipv4_network": "not yet", "ipv4_netmask": "not yet",
	"ipv6_network": "not yet", "explicit_ipv6": "not yet", "ipv6_subnet_prefix": "not yet",
	"ipv4_dns": "not yet", "ipv6_dns": "not yet", "split_dns": "not yet", "tunnel_all_dns": "not yet",
	"nbns": "not yet", "ipv4_nbns": "not yet", "ipv6_nbns": "not yet",
	"hostname": "not yet", "stats_report_time": "not yet",
	"user_profile": "not yet", "client_bypass_protocol": "not yet",

	"net_priority": ignoredKeys["net_priority"],
	"cgroup":       ignoredKeys["cgroup"],
}

// DefaultsTOML is a complete, commented default configuration: every implemented key with its default.
func DefaultsTOML() string {
	d := Default()
	var b strings.Builder
	w := func(comment, line string) { fmt.Fprintf(&b, "# %s\n%s\n\n", comment, line) }
	b.WriteString("# ocgate configuration. Keys are ocserv's option names with '-' replaced by '_'.\n")
	b.WriteString("# Relative paths resolve against this file's directory. Durations are in seconds.\n\n")
	w("Address to listen on (empty: all).", `listen_host = ""`)
	w("Address for UDP (DTLS) (empty: listen_host).", `udp_listen_host = ""`)
	w("TCP port (TLS).", fmt.Sprintf("tcp_port = %d", d.TCPPort))
	w("UDP port (DTLS); 0 = same as tcp_port.", "udp_port = 0")
	w("Disable DTLS.", "no_udp = false")
	w("Offer openconnect's PSK-NEGOTIATE DTLS mode (false: only the legacy DTLS 1.2 resumption mode).", "dtls_psk = true")
	w("Encrypt DTLS records with ocgate's own record layer after pion's handshake (AES-GCM, ChaCha20-Poly1305;\n# no allocation per record); false keeps pion's record layer, about 1.5x slower.", "dtls_fast_path = true")
	w("Server certificate and key (PEM). Empty: a self-signed pair generated in the state directory.", "server_cert = \"\"\nserver_key = \"\"")
	w("CA for client certificates.", `ca_cert = ""`)
	w("Authentication, ocserv syntax. Empty: the generated user in the state directory's users.passwd.", "auth = []")
	w("Address pool (CIDR, or an address with ipv4_netmask). The first usable address is the server's own.", fmt.Sprintf("ipv4_network = %q", d.IPv4Network))
	w("IPv6 inside the tunnel (netstack datapath): the pool, and the prefix each client gets out of it (128: one\n# address). Unset: IPv4 only.", "# ipv6_network = \"fd00:77::/64\"\nipv6_subnet_prefix = 128")
	w("DNS servers pushed to clients. Empty: the server answers DNS itself at its in-pool address.", "dns = []")
	w("Where the built-in resolver (netstack, no dns set) sends queries: IP or IP:PORT. Empty: the host's resolver.\n# It never answers a user with an address the user may not reach.", "dns_upstream = []")
	w("Domains the client resolves through the tunnel (pushed as split DNS); others use the client's own DNS.", "split_dns = []")
	w("Send every DNS query through the tunnel, even when the routes are split.", "tunnel_all_dns = false")
	w("Netstack flow log: one JSON line per ended or refused TCP/UDP flow (user, addresses, bytes each way,\n# duration, reason). A file, or \"-\" for standard error. Empty: off.", `flow_log = ""`)
	w("Routes pushed to clients: CIDR, a.b.c.d/m.m.m.m or \"default\". Empty: everything.", "route = []")
	w("Routes excluded from the tunnel.", "no_route = []")
	w("Link MTU (0: 1500).", "mtu = 0")
	w("Probe the path MTU with DPD.", "try_mtu_discovery = false")
	w("Client keepalive interval.", fmt.Sprintf("keepalive = %d", int64(d.Keepalive.Seconds())))
	w("Dead peer detection interval.", fmt.Sprintf("dpd = %d", int64(d.DPD.Seconds())))
	w("Dead peer detection interval for mobile clients.", fmt.Sprintf("mobile_dpd = %d", int64(d.MobileDPD.Seconds())))
	w("Disconnect after this much time without traffic (0: never).", "idle_timeout = 0")
	w("The same for mobile clients.", "mobile_idle_timeout = 0")
	w("Hard session limit (0: none).", "session_timeout = 0")
	w("How long a cookie stays valid after its connection is lost.", fmt.Sprintf("cookie_timeout = %d", int64(d.CookieTimeout.Seconds())))
	w("Time allowed to authenticate.", fmt.Sprintf("auth_timeout = %d", int64(d.AuthTimeout.Seconds())))
	w("Send over TLS after this much DTLS silence.", fmt.Sprintf("switch_to_tcp_timeout = %d", int64(d.SwitchToTCPTimeout.Seconds())))
	w("Keep the cookie valid after a user logout.", "persistent_cookies = false")
	w("Bind cookies to the client address that authenticated.", "deny_roaming = false")
	w("Maximum sessions (0: unlimited).", fmt.Sprintf("max_clients = %d", d.MaxClients))
	w("Maximum sessions per user (0: unlimited).", fmt.Sprintf("max_same_clients = %d", d.MaxSameClients))
	w("Minimum milliseconds between new connections.", fmt.Sprintf("rate_limit_ms = %d", d.RateLimitMS))
	w("Bytes per second a session may send (0: unlimited); excess packets are dropped.", "rx_data_per_sec = 0")
	w("Bytes per second sent to a session (0: unlimited); excess packets are dropped.", "tx_data_per_sec = 0")
	w("Ban an address once its score reaches this (0: never).", fmt.Sprintf("max_ban_score = %d", d.MaxBanScore))
	w("Forget an address's score after this long.", fmt.Sprintf("ban_reset_time = %d", int64(d.BanResetTime.Seconds())))
	w("How long a ban lasts (also accepted as min_reauth_time).", fmt.Sprintf("ban_time = %d", int64(d.BanTime.Seconds())))
	w("Points for a wrong password.", fmt.Sprintf("ban_points_wrong_password = %d", d.BanPointsWrongPassword))
	w("Points for a connection.", fmt.Sprintf("ban_points_connection = %d", d.BanPointsConnection))
	w("Points for a KKDCP request.", fmt.Sprintf("ban_points_kkdcp = %d", d.BanPointsKKDCP))
	w("Text shown after login.", `banner = ""`)
	w("Text shown with the login form.", `pre_login_banner = ""`)
	w("DNS search domain pushed to clients.", `default_domain = ""`)
	w("Allow LZS/LZ4 compression (leaks information; off by default).", "compression = false")
	w("Do not compress packets smaller than this.", fmt.Sprintf("no_compress_limit = %d", d.NoCompressLimit))
	w("TUN device name prefix (tun datapath).", fmt.Sprintf("device = %q", d.Device))
	w("Scripts run on connect, disconnect and host update.", "connect_script = \"\"\ndisconnect_script = \"\"\nhost_update_script = \"\"")
	w("Drop privileges to this user and group.", "run_as_user = \"\"\nrun_as_group = \"\"")
	w("Management socket (empty: in the state directory).", `occtl_socket_file = ""`)
	w("PID file.", `pid_file = ""`)
	w("Data path: \"netstack\" (no root, no TUN) or \"tun\" (kernel TUN per session).", fmt.Sprintf("datapath = %q", d.Datapath))
	w("CIDRs reachable although loopback/link-local/multicast are refused by default (e.g. \"127.0.0.1/32\").", "egress_allow = []")
	w("CIDRs refused for everyone.", "egress_deny = []")
	w("Directory of per-user files, each named after a user, with the keys allowed per user (route, no_route, iroute,\n"+
		"# dns, explicit_ipv4, restrict_user_to_routes, timeouts, rates...). Read at each login. Empty: none.", `config_per_user = ""`)
	w("Directory of per-group files, each named after a group; applied before the user's file.", `config_per_group = ""`)
	w("Used when config_per_user has no file for the user.", `default_user_config = ""`)
	w("Used when config_per_group has no file for the session's group.", `default_group_config = ""`)
	w("Sessions may only reach their routes (minus no_route); can be set per user.", "restrict_user_to_routes = false")
	w("Sessions may reach each other's addresses; can be set per user.", "client_to_client = true")
	w("How the netstack re-originates clients' pings: \"socket\" (unprivileged ICMP socket, if ping_group_range\n# allows), \"raw\" (CAP_NET_RAW), \"exec\" (the system ping), \"off\"; \"auto\" takes the first that works.", fmt.Sprintf("icmp_echo = %q", d.ICMPEcho))
	w("Push every user's iroutes (from config_per_user) to the other users as routes.", "expose_iroutes = false")
	w("Destination ports sessions may reach, ocserv syntax: only these, e.g. \"tcp(443), udp(53), icmp()\", or all\n"+
		"# but these, \"!(tcp(25), udp(161))\". Protocols: tcp, udp and sctp with a port; icmp, icmpv6 and esp without.\n"+
		"# Enforced in-process: TCP is reset, UDP dropped, pings get ICMP administratively prohibited (tun datapath: every\n"+
		"# packet from the client is checked, refused ones dropped). The server's in-pool address and DNS to the DNS\n"+
		"# servers pushed to the user are exempt. Can be set per user (replacing this list). Empty: no restriction.",
		`restrict_user_to_ports = ""`)
	w("Netstack: concurrent TCP and UDP flows per session; new ones beyond are refused (TCP reset, UDP dropped).",
		fmt.Sprintf("max_flows_per_session = %d", d.MaxFlowsPerSession))
	w("Netstack: TCP flows per session still being connected from the host (half-open); new ones beyond are reset.",
		fmt.Sprintf("max_half_open_per_session = %d", d.MaxHalfOpenPerSession))
	w("Netstack: TCP connections being opened from the host at once, whole server; new flows beyond are reset.",
		fmt.Sprintf("max_dials_in_flight = %d", d.MaxDialsInFlight))
	w("Netstack: idle time before TCP keepalive probes on the host side of TCP flows (0: no keepalive).",
		fmt.Sprintf("tcp_keepalive = %d", int64(d.TCPKeepalive.Seconds())))
	w("Netstack: a UDP flow ends after this much time without a datagram either way.",
		fmt.Sprintf("udp_idle_timeout = %d", int64(d.UDPIdleTimeout.Seconds())))
	w("SOCKS5 ingress (netstack datapath only; ignored with a warning in tun mode, where the kernel routes to the\n"+
		"# clients): HOST:PORT where host applications open TCP connections to VPN clients' addresses, and only those,\n"+
		"# through the stack (CONNECT to literal addresses; the client sees a connection from the server's in-pool\n"+
		"# address), e.g. \"127.0.0.1:1080\". Empty: off.", `socks5_listen = ""`)
	w("Username and password the SOCKS5 ingress requires (RFC 1929); both or neither. Empty: no authentication.", "socks5_user = \"\"\nsocks5_password = \"\"")
	return b.String()
}
