// Package config reads ocgate's TOML configuration. Keys are ocserv's option names with '-' replaced by '_', and
// values keep ocserv's meaning and syntax, so an ocserv administrator can guess every key. Every error names the
// file, the line and the key.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Config is a loaded configuration. Every field documents its key and the meaning of its zero value; every field
// but Path, Dir and Warnings is set by a key of keyTable (keys.go), which holds its default and validation.
type Config struct {
	Path string // file loaded from; "" for embedded defaults
	Dir  string // directory relative paths were resolved against ("" for defaults)

	ListenHost    string // listen_host; "" = all addresses
	UDPListenHost string // udp_listen_host; "" = ListenHost
	TCPPort       int    // tcp_port; default 8443
	UDPPort       int    // udp_port; default = TCPPort
	NoUDP         bool   // no_udp: true disables DTLS
	DTLSPSK       bool   // dtls_psk: offer the PSK-NEGOTIATE DTLS mode (default true); false leaves legacy DTLS 1.2 only
	DTLSFastPath  bool   // dtls_fast_path: our own DTLS record layer after pion's handshake (default true)
	ServerCert    string // server_cert, absolute; "" = generated in the state directory
	ServerKey     string // server_key, absolute
	CACert        string // ca_cert, absolute: the CA of client certificates; "" = none requested
	CRL           string // crl, absolute: revoked client certificates; "" = none

	Auth       []AuthMethod // auth: ocserv strings like "plain[passwd=users.passwd]", all required; empty = the generated user
	EnableAuth []AuthMethod // enable_auth: alternatives to Auth, each enough alone
	Acct       []AuthMethod // acct: at most one "radius[config=FILE]"; empty = no accounting

	CertUserOID        string        // cert_user_oid: an OID of the subject or "SAN(rfc822name)"; default CN 2.5.4.3
	CertGroupOID       string        // cert_group_oid: an OID of the subject giving groups; "" = none
	SelectGroups       []GroupChoice // select_group: groups offered at login
	AutoSelectGroup    bool          // auto_select_group: offer the password file's groups
	DefaultSelectGroup string        // default_select_group: the choice meaning "the user's default group"; "" = none

	IPv4Network      netip.Prefix     // ipv4_network (+ ipv4_netmask); default 10.250.77.0/24
	IPv6Network      netip.Prefix     // ipv6_network (+ ipv6_prefix); invalid (unset) = no IPv6 inside the tunnel
	IPv6SubnetPrefix int              // ipv6_subnet_prefix: the prefix each client gets out of IPv6Network; default 128
	DNS              []netip.Addr     // dns, with ipv4_dns and ipv6_dns added; empty = the server answers DNS itself at its in-pool address
	DNSUpstream      []netip.AddrPort // dns_upstream: where the built-in resolver asks; empty = the host's resolver
	NBNS             []netip.Addr     // nbns: NetBIOS name servers pushed to clients
	SplitDNS         []string         // split_dns: domains the client resolves through the tunnel (others: its own DNS)
	TunnelAllDNS     bool             // tunnel_all_dns: every DNS query goes through the tunnel, even with split routes
	FlowLog          string           // flow_log: file (absolute) getting one JSON line per ended or refused flow; "-" = standard error; "" = off
	Routes           []netip.Prefix   // route; "default" is 0.0.0.0/0 and ::/0; empty = everything
	NoRoutes         []netip.Prefix   // no_route
	MTU              int              // mtu; 0 = 1500
	TryMTUDiscovery  bool             // try_mtu_discovery; kept but unused: the server does not probe the MTU yet

	Keepalive          time.Duration // keepalive; default 32400 s
	DPD                time.Duration // dpd; default 90 s
	MobileDPD          time.Duration // mobile_dpd; default 1800 s
	IdleTimeout        time.Duration // idle_timeout; 0 = none
	MobileIdleTimeout  time.Duration // mobile_idle_timeout; 0 = none
	SessionTimeout     time.Duration // session_timeout; 0 = none
	CookieTimeout      time.Duration // cookie_timeout; default 300 s
	AuthTimeout        time.Duration // auth_timeout: from the TCP connection to login; default 240 s
	RequestTimeout     time.Duration // request_timeout: TLS handshake, and each request before login once begun; default 10 s
	SwitchToTCPTimeout time.Duration // switch_to_tcp_timeout; default 25 s
	PersistentCookies  bool          // persistent_cookies
	DenyRoaming        bool          // deny_roaming

	MaxClients       int // max_clients: sessions (logged-in users); default 1024; 0 = unlimited
	MaxUnauthClients int // max_unauth_clients: connections not logged in yet; default 1024; 0 = unlimited
	MaxUnauthPerIP   int // max_unauth_per_ip: the same from one address (IPv6: /64); default 16; 0 = unlimited
	MaxSameClients   int // max_same_clients; default 2; 0 = unlimited
	RateLimitMS      int // rate_limit_ms: per source address (IPv6: /64), bursts of 20; default 100; 0 = no limit
	ServerDrainMS    int // server_drain_ms: on SIGTERM, serve without accepting for this long first; default 0
	RxDataPerSec     int // rx_data_per_sec: bytes/s a session may send; 0 = unlimited
	TxDataPerSec     int // tx_data_per_sec: bytes/s sent to a session; 0 = unlimited

	MaxBanScore            int           // max_ban_score; default 80; 0 disables bans
	BanResetTime           time.Duration // ban_reset_time; default 1200 s
	BanTime                time.Duration // ban_time (or min_reauth_time); default 300 s
	BanPointsWrongPassword int           // ban_points_wrong_password; default 10
	BanPointsConnection    int           // ban_points_connection; default 1
	BanPointsKKDCP         int           // ban_points_kkdcp; default 1; unused: KKDCP is not supported

	Banner          string // banner, shown after login
	PreLoginBanner  string // pre_login_banner, shown with the login form
	DefaultDomain   string // default_domain
	Compression     bool   // compression: offer LZS/LZ4 to clients that ask; default false
	NoCompressLimit int    // no_compress_limit: packets shorter than this go uncompressed; default 256, at least 64
	// compression_algo_priority: priority by codec name ("lzs", "oc-lz4") where it differs from the defaults
	// (oc-lz4 90, lzs 80); nil = the defaults.
	CompressionAlgoPriority map[string]int

	Device           string // device; default "vpns"
	ConnectScript    string // connect_script, absolute
	DisconnectScript string // disconnect_script, absolute
	HostUpdateScript string // host_update_script, absolute
	RouteAddCmd      string // route_add_cmd: shell command run per iroute when a session's tunnel comes up; "" = none
	RouteDelCmd      string // route_del_cmd: the same when the session ends
	RunAsUser        string // run_as_user
	RunAsGroup       string // run_as_group
	SecModUser       string // sec_mod_user: the security module's user when started as root; "" = RunAsUser
	IsolateWorkers   bool   // isolate_workers: seccomp and Landlock on the network-facing process
	SocketFile       string // socket_file (or occtl_socket_file), absolute; "" = the default place (see ctl)
	UseOcctl         bool   // use_occtl: serve the management socket (default true)
	MetricsListen    string // metrics_listen: HOST:PORT of /metrics, /healthz, /readyz; "" = off
	PidFile          string // pid_file, absolute: written at start, removed on exit; "" = none

	Datapath    string         // datapath: "netstack" (default) or "tun"
	EgressAllow []netip.Prefix // egress_allow (netstack): reachable although the always-deny rules would refuse them
	EgressDeny  []netip.Prefix // egress_deny (netstack): refused for everyone

	// Per-user and per-group configuration (see UserConfig). The four paths are absolute; "" = none.
	ConfigPerUser        string // config_per_user: directory of files named after users
	ConfigPerGroup       string // config_per_group: directory of files named after groups
	DefaultUserConfig    string // default_user_config: used when config_per_user has no file for the user
	DefaultGroupConfig   string // default_group_config: used when config_per_group has no file for the group
	RestrictUserToRoutes bool   // restrict_user_to_routes: sessions may only reach their routes (default false)
	ClientToClient       bool   // client_to_client: sessions may reach each other's addresses (default true)
	ExposeIRoutes        bool   // expose_iroutes: push every user's iroutes to the other users as routes
	ICMPEcho             string // icmp_echo: how the netstack sends clients' pings: auto (default), socket, raw, exec, off

	// Per-session policy and limits enforced in-process. restrict_user_to_ports applies to both datapaths (and can
	// be set per user); the others are the netstack's and have no effect with datapath = "tun".
	RestrictUserToPorts   PortRules     // restrict_user_to_ports, ocserv syntax; zero = no restriction
	MaxFlowsPerSession    int           // max_flows_per_session: a session's concurrent TCP and UDP flows; default 1024
	MaxHalfOpenPerSession int           // max_half_open_per_session: a session's TCP flows still connecting; default 64
	MaxDialsInFlight      int           // max_dials_in_flight: TCP connections being opened from the host; default 1024
	TCPKeepalive          time.Duration // tcp_keepalive: idle time before keepalive probes on host-side TCP; default 30 s; 0 = off
	UDPIdleTimeout        time.Duration // udp_idle_timeout: a UDP flow ends after this much silence; default 60 s

	// SOCKS5 ingress (netstack datapath): host applications reach the VPN clients' addresses through the stack.
	SOCKS5Listen   string // socks5_listen: HOST:PORT (host an IP address or "localhost"); "" = off
	SOCKS5User     string // socks5_user: with SOCKS5Password, required from SOCKS clients; "" = no authentication
	SOCKS5Password string // socks5_password

	// Scale-out (keys_cluster.go): instances sharing state through Redis.
	RedisURL          string // redis_url: redis://HOST:PORT/DB or rediss://...; "" = off
	RedisPasswordFile string // redis_password_file, absolute; "" = the URL's password, if any
	CookieKeyFile     string // cookie_key_file, absolute: base64 keys, one a line, the first seals; "" = random cookies
	RedisUnavailable  string // redis_unavailable: "refuse" (default) or "local"
	InstanceID        string // instance_id; "" = the host name

	// The edge (keys_edge.go): a PROXY-protocol balancer, a proxy that terminated TLS in front.
	ListenProxyProto  bool           // listen_proxy_proto: a PROXY header is required from TrustedProxies
	TrustedProxies    []netip.Prefix // trusted_proxies: whose PROXY header and X-Forwarded-For count; empty = loopback
	ListenClearFile   string         // listen_clear_file, absolute: unix socket for plain HTTP (TLS terminated in front); "" = off
	ListenClear       string         // listen_clear: HOST:PORT for plain HTTP; "" = off
	ListenClearRemote bool           // listen_clear_remote: listen_clear may be a non-loopback address

	Warnings []string // "FILE:LINE: KEY: ..." for keys accepted but ignored, not implemented yet, or without effect
}

// AuthMethod is one parsed `auth` entry.
type AuthMethod struct {
	Name   string            // "plain", "certificate", ...
	Params map[string]string // e.g. {"passwd": "/abs/users.passwd"}; file paths resolved against Dir
}

// GroupChoice is one select_group entry.
type GroupChoice struct {
	Name  string // the group
	Label string // what the form shows; openconnect --authgroup matches it
}

// Default returns the defaults: every key of the table at its default.
func Default() *Config {
	c := defaults()
	derive(&c)
	return &c
}

// derive fills the fields whose default depends on another key.
func derive(c *Config) {
	if c.UDPPort == 0 {
		c.UDPPort = c.TCPPort
	}
}

// PlainPasswd returns the passwd= file of the first "plain" auth method (of auth, then enable_auth), or "".
func (c *Config) PlainPasswd() string {
	for _, a := range slices.Concat(c.Auth, c.EnableAuth) {
		if a.Name == "plain" {
			return a.Params["passwd"]
		}
	}
	return ""
}

// Load reads and parses a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse parses a configuration; path names it in errors and anchors relative paths. Every error of the file is
// reported, each as "FILE:LINE: KEY: message".
func Parse(data []byte, path string) (*Config, error) {
	c := defaults()
	c.Path = path
	if abs, err := filepath.Abs(path); err == nil {
		c.Dir = filepath.Dir(abs)
	}
	p := newParser(path, c.Dir, data)
	md, err := p.decode(data)
	if line, ok := looksLikeOcserv(data, err != nil); ok {
		return nil, fmt.Errorf("%s:%d: this is ocserv's format (keys with '-', values unquoted), not TOML; "+
			"convert it with `ocgate config import %s -o ocgate.toml`", path, line, path)
	}
	if err != nil {
		return nil, err
	}
	p.sortKeys(md, false)
	p.applyGlobal(&c)
	derive(&c)
	p.check(&c)
	if err := p.err(); err != nil {
		return nil, err
	}
	c.Warnings = p.warns
	return &c, nil
}

// applyGlobal applies the keys of p.vals to c, in the table's order.
func (p *parser) applyGlobal(c *Config) {
	for i := range keyTable {
		k := &keyTable[i]
		if v, ok := p.vals[k.name]; ok && k.scope != userOnly && k.status == applied {
			k.apply(p, c, v)
		}
	}
}
