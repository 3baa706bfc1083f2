// Package config reads ocgate's TOML configuration. Keys are ocserv's option names with '-' replaced by '_', and
// values keep ocserv's meaning and syntax, so an ocserv administrator can guess every key. Every error names the
// file, the line and the key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is a loaded configuration. Every field documents its key and the meaning of its zero value.
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
	CACert        string // ca_cert, absolute (client certificates)

	Auth []AuthMethod // auth: ocserv strings like "plain[passwd=users.passwd]"; empty = the generated user

	IPv4Network      netip.Prefix     // ipv4_network (+ ipv4_netmask); default 10.250.77.0/24
	IPv6Network      netip.Prefix     // ipv6_network (+ ipv6_prefix); invalid (unset) = no IPv6 inside the tunnel
	IPv6SubnetPrefix int              // ipv6_subnet_prefix: the prefix each client gets out of IPv6Network; default 128
	DNS              []netip.Addr     // dns; empty = the server answers DNS itself at its in-pool address
	DNSUpstream      []netip.AddrPort // dns_upstream: where the built-in resolver asks; empty = the host's resolver
	SplitDNS         []string         // split_dns: domains the client resolves through the tunnel (others: its own DNS)
	TunnelAllDNS     bool             // tunnel_all_dns: every DNS query goes through the tunnel, even with split routes
	FlowLog          string           // flow_log: file (absolute) getting one JSON line per ended or refused flow; "-" = standard error; "" = off
	Routes           []netip.Prefix   // route; "default" is 0.0.0.0/0 and ::/0; empty = everything
	NoRoutes         []netip.Prefix   // no_route
	MTU              int              // mtu; 0 = 1500
	TryMTUDiscovery  bool             // try_mtu_discovery

	Keepalive          time.Duration // keepalive; default 32400 s
	DPD                time.Duration // dpd; default 90 s
	MobileDPD          time.Duration // mobile_dpd; default 1800 s
	IdleTimeout        time.Duration // idle_timeout; 0 = none
	MobileIdleTimeout  time.Duration // mobile_idle_timeout; 0 = none
	SessionTimeout     time.Duration // session_timeout; 0 = none
	CookieTimeout      time.Duration // cookie_timeout; default 300 s
	AuthTimeout        time.Duration // auth_timeout; default 240 s
	SwitchToTCPTimeout time.Duration // switch_to_tcp_timeout; default 25 s
	PersistentCookies  bool          // persistent_cookies
	DenyRoaming        bool          // deny_roaming

	MaxClients     int // max_clients; default 1024; 0 = unlimited
	MaxSameClients int // max_same_clients; default 2; 0 = unlimited
	RateLimitMS    int // rate_limit_ms; default 100
	RxDataPerSec   int // rx_data_per_sec: bytes/s a session may send; 0 = unlimited
	TxDataPerSec   int // tx_data_per_sec: bytes/s sent to a session; 0 = unlimited

	MaxBanScore            int           // max_ban_score; default 80; 0 disables bans
	BanResetTime           time.Duration // ban_reset_time; default 1200 s
	BanTime                time.Duration // ban_time (or min_reauth_time); default 300 s
	BanPointsWrongPassword int           // ban_points_wrong_password; default 10
	BanPointsConnection    int           // ban_points_connection; default 1
	BanPointsKKDCP         int           // ban_points_kkdcp; default 1

	Banner          string // banner, shown after login
	PreLoginBanner  string // pre_login_banner, shown with the login form
	DefaultDomain   string // default_domain
	Compression     bool   // compression; default false
	NoCompressLimit int    // no_compress_limit; default 256

	Device           string // device; default "vpns"
	ConnectScript    string // connect_script, absolute
	DisconnectScript string // disconnect_script, absolute
	HostUpdateScript string // host_update_script, absolute
	RunAsUser        string // run_as_user
	RunAsGroup       string // run_as_group
	OcctlSocketFile  string // occtl_socket_file, absolute; "" = in the state directory
	PidFile          string // pid_file, absolute

	Datapath    string         // datapath: "netstack" (default) or "tun"
	EgressAllow []netip.Prefix // egress_allow: reachable although the always-deny rules would refuse them
	EgressDeny  []netip.Prefix // egress_deny: refused for everyone

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

	Warnings []string // "FILE:LINE: KEY: ..." for keys accepted but ignored or not implemented yet
}

// AuthMethod is one parsed `auth` entry.
type AuthMethod struct {
	Name   string            // "plain", "certificate", ...
	Params map[string]string // e.g. {"passwd": "/abs/users.passwd"}; file paths resolved against Dir
}

// Default returns the embedded defaults.
func Default() *Config {
	return &Config{
		TCPPort:                8443,
		UDPPort:                8443,
		DTLSPSK:                true,
		DTLSFastPath:           true,
		IPv4Network:            netip.MustParsePrefix("10.250.77.0/24"),
		IPv6SubnetPrefix:       128,
		Keepalive:              32400 * time.Second,
		DPD:                    90 * time.Second,
		MobileDPD:              1800 * time.Second,
		CookieTimeout:          300 * time.Second,
		AuthTimeout:            240 * time.Second,
		SwitchToTCPTimeout:     25 * time.Second,
		MaxClients:             1024,
		MaxSameClients:         2,
		RateLimitMS:            100,
		MaxBanScore:            80,
		BanResetTime:           1200 * time.Second,
		BanTime:                300 * time.Second,
		BanPointsWrongPassword: 10,
		BanPointsConnection:    1,
		BanPointsKKDCP:         1,
		NoCompressLimit:        256,
		Device:                 "vpns",
		Datapath:               "netstack",
		ClientToClient:         true,
		ICMPEcho:               "auto",
		MaxFlowsPerSession:     1024,
		MaxHalfOpenPerSession:  64,
		MaxDialsInFlight:       1024,
		TCPKeepalive:           30 * time.Second,
		UDPIdleTimeout:         60 * time.Second,
	}
}

// PlainPasswd returns the passwd= file of the first "plain" auth method, or "".
func (c *Config) PlainPasswd() string {
	for _, a := range c.Auth {
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

// raw mirrors the file: pointers tell "absent" from "zero".
type raw struct {
	ListenHost         *string  `toml:"listen_host"`
	UDPListenHost      *string  `toml:"udp_listen_host"`
	TCPPort            *int64   `toml:"tcp_port"`
	UDPPort            *int64   `toml:"udp_port"`
	NoUDP              *bool    `toml:"no_udp"`
	DTLSPSK            *bool    `toml:"dtls_psk"`
	DTLSFastPath       *bool    `toml:"dtls_fast_path"`
	ServerCert         *string  `toml:"server_cert"`
	ServerKey          *string  `toml:"server_key"`
	CACert             *string  `toml:"ca_cert"`
	Auth               []string `toml:"auth"`
	IPv4Network        *string  `toml:"ipv4_network"`
	IPv4Netmask        *string  `toml:"ipv4_netmask"`
	IPv6Network        *string  `toml:"ipv6_network"`
	IPv6Prefix         *int     `toml:"ipv6_prefix"`
	IPv6SubnetPrefix   *int     `toml:"ipv6_subnet_prefix"`
	DNS                []string `toml:"dns"`
	DNSUpstream        []string `toml:"dns_upstream"`
	SplitDNS           []string `toml:"split_dns"`
	TunnelAllDNS       *bool    `toml:"tunnel_all_dns"`
	FlowLog            *string  `toml:"flow_log"`
	Route              []string `toml:"route"`
	NoRoute            []string `toml:"no_route"`
	MTU                *int64   `toml:"mtu"`
	TryMTUDiscovery    *bool    `toml:"try_mtu_discovery"`
	Keepalive          *int64   `toml:"keepalive"`
	DPD                *int64   `toml:"dpd"`
	MobileDPD          *int64   `toml:"mobile_dpd"`
	IdleTimeout        *int64   `toml:"idle_timeout"`
	MobileIdleTimeout  *int64   `toml:"mobile_idle_timeout"`
	SessionTimeout     *int64   `toml:"session_timeout"`
	CookieTimeout      *int64   `toml:"cookie_timeout"`
	AuthTimeout        *int64   `toml:"auth_timeout"`
	SwitchToTCPTimeout *int64   `toml:"switch_to_tcp_timeout"`
	PersistentCookies  *bool    `toml:"persistent_cookies"`
	DenyRoaming        *bool    `toml:"deny_roaming"`
	MaxClients         *int64   `toml:"max_clients"`
	MaxSameClients     *int64   `toml:"max_same_clients"`
	RateLimitMS        *int64   `toml:"rate_limit_ms"`
	RxDataPerSec       *int64   `toml:"rx_data_per_sec"`
	TxDataPerSec       *int64   `toml:"tx_data_per_sec"`
	MaxBanScore        *int64   `toml:"max_ban_score"`
	BanResetTime       *int64   `toml:"ban_reset_time"`
	BanTime            *int64   `toml:"ban_time"`
	MinReauthTime      *int64   `toml:"min_reauth_time"`
	BanPointsWrongPW   *int64   `toml:"ban_points_wrong_password"`
	BanPointsConn      *int64   `toml:"ban_points_connection"`
	BanPointsKKDCP     *int64   `toml:"ban_points_kkdcp"`
	Banner             *string  `toml:"banner"`
	PreLoginBanner     *string  `toml:"pre_login_banner"`
	DefaultDomain      *string  `toml:"default_domain"`
	Compression        *bool    `toml:"compression"`
	NoCompressLimit    *int64   `toml:"no_compress_limit"`
	Device             *string  `toml:"device"`
	ConnectScript      *string  `toml:"connect_script"`
	DisconnectScript   *string  `toml:"disconnect_script"`
	HostUpdateScript   *string  `toml:"host_update_script"`
	RunAsUser          *string  `toml:"run_as_user"`
	RunAsGroup         *string  `toml:"run_as_group"`
	OcctlSocketFile    *string  `toml:"occtl_socket_file"`
	PidFile            *string  `toml:"pid_file"`
	Datapath           *string  `toml:"datapath"`
	EgressAllow        []string `toml:"egress_allow"`
	EgressDeny         []string `toml:"egress_deny"`
	ConfigPerUser      *string  `toml:"config_per_user"`
	ConfigPerGroup     *string  `toml:"config_per_group"`
	DefaultUserConfig  *string  `toml:"default_user_config"`
	DefaultGroupConfig *string  `toml:"default_group_config"`
	RestrictToRoutes   *bool    `toml:"restrict_user_to_routes"`
	ClientToClient     *bool    `toml:"client_to_client"`
	ExposeIRoutes      *bool    `toml:"expose_iroutes"`
	ICMPEcho           *string  `toml:"icmp_echo"`
	RestrictToPorts    *string  `toml:"restrict_user_to_ports"`
	MaxFlows           *int64   `toml:"max_flows_per_session"`
	MaxHalfOpen        *int64   `toml:"max_half_open_per_session"`
	MaxDials           *int64   `toml:"max_dials_in_flight"`
	TCPKeepalive       *int64   `toml:"tcp_keepalive"`
	UDPIdleTimeout     *int64   `toml:"udp_idle_timeout"`
	SOCKS5Listen       *string  `toml:"socks5_listen"`
	SOCKS5User         *string  `toml:"socks5_user"`
	SOCKS5Password     *string  `toml:"socks5_password"`
	IRoute             []string `toml:"iroute"`        // per-user and per-group files only
	ExplicitIPv4       *string  `toml:"explicit_ipv4"` // per-user and per-group files only
}

// parser collects every error of one file.
type parser struct {
	path  string
	lines []string
	errs  []error
	warns []string
}

// line finds the line where key is set (top-level "key =", or a table header for dotted keys and for tables);
// 0 if unknown.
func (p *parser) line(key string) int {
	first, _, dotted := strings.Cut(key, ".")
	re := regexp.MustCompile(`^\s*("?)` + regexp.QuoteMeta(key) + `("?)\s*=`)
	tbl := regexp.MustCompile(`^\s*\[+\s*"?` + regexp.QuoteMeta(first) + `"?\s*[.\]]`)
	for i, l := range p.lines {
		if re.MatchString(l) || dotted && tbl.MatchString(l) {
			return i + 1
		}
	}
	if !dotted { // a table: [key]
		for i, l := range p.lines {
			if tbl.MatchString(l) {
				return i + 1
			}
		}
	}
	return 0
}

func (p *parser) errf(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s: %s", p.path, p.line(key), key, fmt.Sprintf(format, args...)))
}

func (p *parser) warnf(key, format string, args ...any) {
	p.warns = append(p.warns, fmt.Sprintf("%s:%d: %s: %s", p.path, p.line(key), key, fmt.Sprintf(format, args...)))
}

// decodeErrRE matches the decoder's type errors, which carry the line in their text only.
var decodeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decode decodes TOML into r; errors name the file, the line and (when known) the key.
func decode(data []byte, path string, r *raw) (toml.MetaData, error) {
	md, err := toml.Decode(string(data), r)
	if err == nil {
		return md, nil
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key := pe.LastKey
		if key == "" {
			return md, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return md, fmt.Errorf("%s:%d: %s: %s", path, pe.Position.Line, key, pe.Message)
	}
	if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
		return md, fmt.Errorf("%s:%s: %s: %s", path, m[1], m[2], m[3])
	}
	return md, fmt.Errorf("%s: %w", path, err)
}

// Parse parses a configuration; path names it in errors and anchors relative paths.
func Parse(data []byte, path string) (*Config, error) {
	p := &parser{path: path, lines: strings.Split(string(data), "\n")}
	var r raw
	md, err := decode(data, path, &r)
	if err != nil {
		return nil, err
	}
	c := Default()
	c.Path = path
	if abs, err := filepath.Abs(path); err == nil {
		c.Dir = filepath.Dir(abs)
	}
	for _, k := range md.Undecoded() {
		key := k.String()
		top := k[0]
		switch {
		case len(k) == 1 && ignoredKeys[top] != "":
			p.warnf(key, "ignored: %s", ignoredKeys[top])
		case len(k) == 1 && notYetKeys[top]:
			p.warnf(key, "accepted but not implemented yet")
		case len(k) > 1 && (ignoredKeys[top] != "" || notYetKeys[top]):
			// inside a table of an accepted key: reported once, at the table
		default:
			p.errf(key, "unknown key")
		}
	}
	for _, key := range userOnlyKeys {
		if md.IsDefined(key) {
			p.errf(key, "allowed only in per-user and per-group files (config_per_user, config_per_group)")
		}
	}
	p.apply(&r, c)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	c.Warnings = p.warns
	return c, nil
}

// set copies *v to *dst when the key was present.
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// integer sets *dst from v when present and within lo..hi.
func (p *parser) integer(key string, dst *int, v *int64, lo, hi int64) {
	if v == nil {
		return
	}
	if *v < lo || *v > hi {
		p.errf(key, "%d is out of range (%d to %d)", *v, lo, hi)
		return
	}
	*dst = int(*v)
}

// seconds sets *dst from a number of seconds when present.
func (p *parser) seconds(key string, dst *time.Duration, v *int64) {
	if v == nil {
		return
	}
	if *v < 0 || *v > 10*365*86400 {
		p.errf(key, "%d is not a valid number of seconds", *v)
		return
	}
	*dst = time.Duration(*v) * time.Second
}

func (p *parser) apply(r *raw, c *Config) {
	str := set[string]
	boolean := set[bool]
	path := func(key string, dst *string, v *string) {
		if v != nil {
			*dst = p.resolve(c, *v)
		}
	}
	integer, seconds := p.integer, p.seconds

	str(&c.ListenHost, r.ListenHost)
	str(&c.UDPListenHost, r.UDPListenHost)
	integer("tcp_port", &c.TCPPort, r.TCPPort, 1, 65535)
	c.UDPPort = c.TCPPort
	if r.UDPPort != nil && *r.UDPPort != 0 {
		integer("udp_port", &c.UDPPort, r.UDPPort, 1, 65535)
	}
	boolean(&c.NoUDP, r.NoUDP)
	boolean(&c.DTLSPSK, r.DTLSPSK)
	boolean(&c.DTLSFastPath, r.DTLSFastPath)
	path("server_cert", &c.ServerCert, r.ServerCert)
	path("server_key", &c.ServerKey, r.ServerKey)
	path("ca_cert", &c.CACert, r.CACert)
	for _, a := range r.Auth {
		if m, err := parseAuth(a); err != nil {
			p.errf("auth", "%q: %v", a, err)
		} else {
			for k, v := range m.Params {
				if k == "passwd" || k == "otp" || k == "config" {
					m.Params[k] = p.resolve(c, v)
				}
			}
			c.Auth = append(c.Auth, m)
		}
	}
	p.network(r, c)
	p.network6(r, c)
	c.DNS = p.addrs("dns", r.DNS)
	for _, s := range r.DNSUpstream {
		s = strings.TrimSpace(s)
		if a, err := netip.ParseAddr(s); err == nil {
			c.DNSUpstream = append(c.DNSUpstream, netip.AddrPortFrom(a, 53))
		} else if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
			c.DNSUpstream = append(c.DNSUpstream, ap)
		} else {
			p.errf("dns_upstream", "%q: want an IP address or IP:PORT (e.g. \"127.0.0.53\" or \"[::1]:5353\")", s)
		}
	}
	for _, d := range r.SplitDNS {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d == "" || len(d) > 253 || strings.ContainsAny(d, " \t\r\n,;") {
			p.errf("split_dns", "%q is not a domain name", d)
			continue
		}
		c.SplitDNS = append(c.SplitDNS, d)
	}
	boolean(&c.TunnelAllDNS, r.TunnelAllDNS)
	if r.FlowLog != nil && *r.FlowLog == "-" {
		c.FlowLog = "-"
	} else {
		path("flow_log", &c.FlowLog, r.FlowLog)
	}
	c.Routes = p.routes("route", r.Route)
	c.NoRoutes = p.routes("no_route", r.NoRoute)
	if r.MTU != nil && *r.MTU != 0 {
		integer("mtu", &c.MTU, r.MTU, 1280, 9000)
	}
	boolean(&c.TryMTUDiscovery, r.TryMTUDiscovery)
	seconds("keepalive", &c.Keepalive, r.Keepalive)
	seconds("dpd", &c.DPD, r.DPD)
	seconds("mobile_dpd", &c.MobileDPD, r.MobileDPD)
	seconds("idle_timeout", &c.IdleTimeout, r.IdleTimeout)
	seconds("mobile_idle_timeout", &c.MobileIdleTimeout, r.MobileIdleTimeout)
	seconds("session_timeout", &c.SessionTimeout, r.SessionTimeout)
	seconds("cookie_timeout", &c.CookieTimeout, r.CookieTimeout)
	seconds("auth_timeout", &c.AuthTimeout, r.AuthTimeout)
	if r.AuthTimeout != nil && *r.AuthTimeout == 0 {
		p.errf("auth_timeout", "must be at least 1 second")
	}
	seconds("switch_to_tcp_timeout", &c.SwitchToTCPTimeout, r.SwitchToTCPTimeout)
	boolean(&c.PersistentCookies, r.PersistentCookies)
	boolean(&c.DenyRoaming, r.DenyRoaming)
	integer("max_clients", &c.MaxClients, r.MaxClients, 0, 1<<24)
	integer("max_same_clients", &c.MaxSameClients, r.MaxSameClients, 0, 1<<24)
	integer("rate_limit_ms", &c.RateLimitMS, r.RateLimitMS, 0, 60000)
	integer("rx_data_per_sec", &c.RxDataPerSec, r.RxDataPerSec, 0, 1<<40)
	integer("tx_data_per_sec", &c.TxDataPerSec, r.TxDataPerSec, 0, 1<<40)
	integer("max_ban_score", &c.MaxBanScore, r.MaxBanScore, 0, 1<<30)
	seconds("ban_reset_time", &c.BanResetTime, r.BanResetTime)
	seconds("min_reauth_time", &c.BanTime, r.MinReauthTime)
	seconds("ban_time", &c.BanTime, r.BanTime)
	integer("ban_points_wrong_password", &c.BanPointsWrongPassword, r.BanPointsWrongPW, 0, 1<<30)
	integer("ban_points_connection", &c.BanPointsConnection, r.BanPointsConn, 0, 1<<30)
	integer("ban_points_kkdcp", &c.BanPointsKKDCP, r.BanPointsKKDCP, 0, 1<<30)
	str(&c.Banner, r.Banner)
	str(&c.PreLoginBanner, r.PreLoginBanner)
	str(&c.DefaultDomain, r.DefaultDomain)
	boolean(&c.Compression, r.Compression)
	if c.Compression {
		p.warnf("compression", "not implemented yet: sessions run uncompressed (clients are not offered LZS/LZ4)")
	}
	integer("no_compress_limit", &c.NoCompressLimit, r.NoCompressLimit, 0, 65535)
	str(&c.Device, r.Device)
	path("connect_script", &c.ConnectScript, r.ConnectScript)
	path("disconnect_script", &c.DisconnectScript, r.DisconnectScript)
	path("host_update_script", &c.HostUpdateScript, r.HostUpdateScript)
	str(&c.RunAsUser, r.RunAsUser)
	str(&c.RunAsGroup, r.RunAsGroup)
	path("occtl_socket_file", &c.OcctlSocketFile, r.OcctlSocketFile)
	path("pid_file", &c.PidFile, r.PidFile)
	if r.Datapath != nil {
		switch *r.Datapath {
		case "netstack", "tun":
			c.Datapath = *r.Datapath
		default:
			p.errf("datapath", "%q: want \"netstack\" or \"tun\"", *r.Datapath)
		}
	}
	c.EgressAllow = p.cidrs("egress_allow", r.EgressAllow)
	c.EgressDeny = p.cidrs("egress_deny", r.EgressDeny)
	path("config_per_user", &c.ConfigPerUser, r.ConfigPerUser)
	path("config_per_group", &c.ConfigPerGroup, r.ConfigPerGroup)
	path("default_user_config", &c.DefaultUserConfig, r.DefaultUserConfig)
	path("default_group_config", &c.DefaultGroupConfig, r.DefaultGroupConfig)
	if c.DefaultUserConfig != "" && c.ConfigPerUser == "" {
		p.warnf("default_user_config", "has no effect without config_per_user")
	}
	if c.DefaultGroupConfig != "" && c.ConfigPerGroup == "" {
		p.warnf("default_group_config", "has no effect without config_per_group")
	}
	boolean(&c.RestrictUserToRoutes, r.RestrictToRoutes)
	boolean(&c.ClientToClient, r.ClientToClient)
	if r.ICMPEcho != nil {
		switch *r.ICMPEcho {
		case "auto", "socket", "raw", "exec", "off":
			c.ICMPEcho = *r.ICMPEcho
		default:
			p.errf("icmp_echo", "%q: want \"auto\", \"socket\", \"raw\", \"exec\" or \"off\"", *r.ICMPEcho)
		}
	}
	boolean(&c.ExposeIRoutes, r.ExposeIRoutes)
	if c.ExposeIRoutes && c.ConfigPerUser == "" {
		p.warnf("expose_iroutes", "has no effect without config_per_user")
	}
	p.limits(r, c)
	p.socks5(r, c)
}

// socks5 handles socks5_listen, socks5_user and socks5_password (after datapath).
func (p *parser) socks5(r *raw, c *Config) {
	if r.SOCKS5Listen != nil && *r.SOCKS5Listen != "" {
		v := *r.SOCKS5Listen
		host, port, err := net.SplitHostPort(v)
		n, perr := strconv.Atoi(port)
		_, aerr := netip.ParseAddr(host)
		switch {
		case err != nil:
			p.errf("socks5_listen", "%q: want HOST:PORT, e.g. \"127.0.0.1:1080\"", v)
		case perr != nil || n < 1 || n > 65535:
			p.errf("socks5_listen", "%q: the port must be 1 to 65535", v)
		case host == "":
			p.errf("socks5_listen", "%q: give the address to listen on, e.g. \"127.0.0.1:1080\" (use \"0.0.0.0:%d\" to listen on every address)", v, n)
		case host != "localhost" && aerr != nil:
			p.errf("socks5_listen", "%q: the host must be an IP address or \"localhost\"", v)
		default:
			c.SOCKS5Listen = v
		}
	}
	set(&c.SOCKS5User, r.SOCKS5User)
	set(&c.SOCKS5Password, r.SOCKS5Password)
	switch {
	case c.SOCKS5User != "" && c.SOCKS5Password == "":
		p.errf("socks5_user", "set without socks5_password (set both, or neither for no authentication)")
	case c.SOCKS5User == "" && c.SOCKS5Password != "":
		p.errf("socks5_password", "set without socks5_user (set both, or neither for no authentication)")
	}
	for _, kv := range [][2]string{{"socks5_user", c.SOCKS5User}, {"socks5_password", c.SOCKS5Password}} {
		if len(kv[1]) > 255 {
			p.errf(kv[0], "longer than 255 bytes (the SOCKS5 limit)")
		}
	}
	if c.SOCKS5Listen == "" {
		if c.SOCKS5User != "" && c.SOCKS5Password != "" {
			p.warnf("socks5_user", "has no effect without socks5_listen")
		}
		return
	}
	if c.Datapath == "tun" {
		p.warnf("socks5_listen", "ignored with datapath = \"tun\": the host reaches the clients' addresses through the kernel's routes")
		return
	}
	host, _, _ := net.SplitHostPort(c.SOCKS5Listen)
	if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() && c.SOCKS5User == "" {
		p.warnf("socks5_listen", "%s is not a loopback address and socks5_user is not set: whoever reaches it reaches the VPN clients", host)
	}
}

func (p *parser) resolve(c *Config, v string) string {
	if v == "" || filepath.IsAbs(v) || c.Dir == "" {
		return v
	}
	return filepath.Join(c.Dir, v)
}

// network handles ipv4_network with ipv4_netmask (dotted, "/N" or "N"), or CIDR alone.
func (p *parser) network(r *raw, c *Config) {
	if r.IPv4Network == nil {
		if r.IPv4Netmask != nil {
			p.errf("ipv4_netmask", "set without ipv4_network")
		}
		return
	}
	s := strings.TrimSpace(*r.IPv4Network)
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if pfx, err = parseRoute(s); err != nil || !pfx.Addr().Is4() {
			p.errf("ipv4_network", "%q is not an IPv4 network", s)
			return
		}
		if r.IPv4Netmask != nil {
			if bits, err := parseMask(*r.IPv4Netmask); err != nil || bits != pfx.Bits() {
				p.errf("ipv4_netmask", "%q does not agree with ipv4_network %q", *r.IPv4Netmask, s)
				return
			}
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			p.errf("ipv4_network", "%q is not an IPv4 address", s)
			return
		}
		if r.IPv4Netmask == nil {
			p.errf("ipv4_network", "%q needs ipv4_netmask (or use CIDR, e.g. %s/24)", s, s)
			return
		}
		bits, err := parseMask(*r.IPv4Netmask)
		if err != nil {
			p.errf("ipv4_netmask", "%q is not a valid netmask", *r.IPv4Netmask)
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

// network6 handles ipv6_network (CIDR, or an address with ipv6_prefix) and ipv6_subnet_prefix.
func (p *parser) network6(r *raw, c *Config) {
	if r.IPv6SubnetPrefix != nil {
		c.IPv6SubnetPrefix = *r.IPv6SubnetPrefix
	}
	if r.IPv6Network == nil {
		if r.IPv6Prefix != nil {
			p.errf("ipv6_prefix", "set without ipv6_network")
		}
		return
	}
	s := strings.TrimSpace(*r.IPv6Network)
	var pfx netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		pfx, err = netip.ParsePrefix(s)
		if r.IPv6Prefix != nil && err == nil && *r.IPv6Prefix != pfx.Bits() {
			p.errf("ipv6_prefix", "%d does not agree with ipv6_network %q", *r.IPv6Prefix, s)
			return
		}
	} else if r.IPv6Prefix == nil {
		p.errf("ipv6_network", "%q needs a prefix length (e.g. %s/64)", s, s)
		return
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(s); err == nil {
			pfx, err = a.Prefix(*r.IPv6Prefix)
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

func (p *parser) routes(key string, in []string) []netip.Prefix {
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

func (p *parser) addrs(key string, in []string) []netip.Addr {
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

func (p *parser) cidrs(key string, in []string) []netip.Prefix {
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

// supportedAuth lists the auth methods implemented so far.
var supportedAuth = []string{"plain"}

// knownAuth are ocserv's methods, refused with "not supported" rather than "unknown".
var knownAuth = []string{"plain", "certificate", "pam", "radius", "gssapi", "oidc"}

// parseAuth parses ocserv's `name[key=value,key=value]` syntax.
func parseAuth(s string) (AuthMethod, error) {
	s = strings.TrimSpace(s)
	name, rest, hasParams := strings.Cut(s, "[")
	m := AuthMethod{Name: strings.TrimSpace(name), Params: map[string]string{}}
	if hasParams {
		body, ok := strings.CutSuffix(rest, "]")
		if !ok {
			return m, errors.New("missing ']'")
		}
		for kv := range strings.SplitSeq(body, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return m, fmt.Errorf("parameter %q: want key=value", kv)
			}
			m.Params[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	switch {
	case slices.Contains(supportedAuth, m.Name):
	case slices.Contains(knownAuth, m.Name):
		return m, fmt.Errorf("method %q is not supported yet (supported: %s)", m.Name, strings.Join(supportedAuth, ", "))
	default:
		return m, fmt.Errorf("unknown method %q (supported: %s)", m.Name, strings.Join(supportedAuth, ", "))
	}
	if m.Name == "plain" && m.Params["passwd"] == "" {
		return m, errors.New("plain needs passwd=FILE")
	}
	// A parameter we do not act on must not pass silently: "otp=" ignored would leave an administrator
	// believing one-time passwords are asked for.
	for k := range m.Params {
		switch {
		case m.Name == "plain" && k == "passwd":
		case k == "otp":
			return m, errors.New("otp= (one-time passwords) is not supported yet")
		default:
			return m, fmt.Errorf("parameter %q is not supported for %s", k, m.Name)
		}
	}
	return m, nil
}
