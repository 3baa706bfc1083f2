package config

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestErrorsNameFileLineKey(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown key", "tcp_port = 443\nno_such_key = 1\n", "f.toml:2: no_such_key: unknown key"},
		{"wrong type", "\n\ntcp_port = \"443\"\n", "f.toml:3: tcp_port:"},
		{"bad netmask", "ipv4_network = \"10.0.0.0\"\nipv4_netmask = \"255.0.255.0\"\n", "f.toml:2: ipv4_netmask:"},
		{"network without mask", "ipv4_network = \"10.0.0.0\"\n", "f.toml:1: ipv4_network:"},
		{"bad route", "route = [\"10.0.0.0/8\", \"nonsense\"]\n", "f.toml:1: route: \"nonsense\" is not a route"},
		{"unknown auth", "auth = [\"kerberos[x=y]\"]\n", "f.toml:1: auth:"},
		{"unsupported auth", "auth = [\"pam\"]\n", "not supported yet"},
		{"radius without config", "auth = [\"radius\"]\n", "radius needs config=FILE"},
		{"radius and plain", "auth = [\"radius[config=r]\", \"plain[passwd=p]\"]\n", "2 password methods"},
		{"radius unknown parameter", "auth = [\"radius[config=r,secret=x]\"]\n", "parameter \"secret\" is not supported"},
		{"acct not radius", "acct = \"plain[passwd=p]\"\n", "f.toml:1: acct: \"plain[passwd=p]\": method \"plain\" cannot do accounting"},
		{"acct without config", "acct = \"radius[groupconfig=true]\"\n", "radius needs config=FILE"},
		{"plain without file", "auth = [\"plain\"]\n", "plain needs passwd=FILE"},
		{"two password methods", "\nauth = [\"plain[passwd=p]\", \"plain[passwd=q]\"]\n", "f.toml:2: auth: 2 password methods"},
		{"certificate without ca_cert", "auth = [\"certificate\"]\n", "f.toml:1: auth: the certificate method needs ca_cert"},
		{"enable_auth without auth", "enable_auth = [\"certificate\"]\nca_cert = \"c\"\n", "f.toml:1: enable_auth: set without auth"},
		{"bad cert_user_oid", "cert_user_oid = \"CN\"\n", "f.toml:1: cert_user_oid: \"CN\": want a dotted OID"},
		{"bad select_group", "select_group = [\"eng[Engineering\"]\n", "f.toml:1: select_group: \"eng[Engineering\": missing ']'"},
		{"unknown auth parameter", "auth = [\"plain[passwd=p,pasword=q]\"]\n", "parameter \"pasword\" is not supported for plain"},
		{"bad datapath", "\ndatapath = \"tap\"\n", "f.toml:2: datapath:"},
		{"negative duration", "dpd = -5\n", "f.toml:1: dpd: -5 is not a valid number of seconds"},
		{"port out of range", "tcp_port = 70000\n", "f.toml:1: tcp_port: 70000 is out of range"},
		{"bad dns", "dns = [\"1.2.3\"]\n", "f.toml:1: dns:"},
		{"bad egress cidr", "egress_deny = [\"10.0.0.0/33\"]\n", "f.toml:1: egress_deny:"},
		{"syntax error", "tcp_port = = 1\n", "f.toml:1"},
		{"unknown table", "[vhost]\nx = 1\n", "f.toml:1: vhost.x: unknown key"},
		{"unknown nested table", "[vhost]\nx = 1\n[vhost.a]\ny = 2\n", "f.toml:3: vhost.a: unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "f.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// The compression keys apply without warnings; no_compress_limit is raised to ocserv's minimum and
// compression_algo_priority takes ocserv's NAME:PRIORITY, one or several.
func TestCompressionKeys(t *testing.T) {
	tests := []struct {
		name, in string
		limit    int
		prio     map[string]int
	}{
		{"defaults", "", 256, nil},
		{"enabled", "compression = true\nno_compress_limit = 100\n", 100, nil},
		{"limit below 64", "no_compress_limit = 10\n", 64, nil},
		{"one priority", "compression_algo_priority = \"LZS:100\"\n", 256, map[string]int{"lzs": 100}},
		{"two priorities", "compression_algo_priority = [\"lzs:5\", \"oc-lz4:7\"]\n", 256, map[string]int{"lzs": 5, "oc-lz4": 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "f.toml")
			if err != nil || len(c.Warnings) != 0 {
				t.Fatalf("Parse: %v, warnings %q", err, c.Warnings)
			}
			if c.Compression != strings.Contains(tc.in, "compression = true") || c.NoCompressLimit != tc.limit ||
				!maps.Equal(c.CompressionAlgoPriority, tc.prio) {
				t.Errorf("compression %v, limit %d, priorities %v; want limit %d, priorities %v",
					c.Compression, c.NoCompressLimit, c.CompressionAlgoPriority, tc.limit, tc.prio)
			}
		})
	}
	for _, in := range []string{`"lz4:10"`, `"lzs"`, `"lzs:0"`, `"lzs:x"`, `3`, `["lzs:1", 2]`} {
		t.Run("bad "+in, func(t *testing.T) {
			if _, err := Parse([]byte("compression_algo_priority = "+in+"\n"), "f.toml"); err == nil ||
				!strings.Contains(err.Error(), "f.toml:1: compression_algo_priority") {
				t.Errorf("err = %v, want one naming the key and line", err)
			}
		})
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, err := Parse([]byte("a = 1\nb = 2\ndpd = -1\n"), "f.toml")
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("want three errors, got %v", err)
	}
}

func TestNetworkForms(t *testing.T) {
	want := netip.MustParsePrefix("10.1.0.0/16")
	for _, in := range []string{
		"ipv4_network = \"10.1.0.0/16\"",
		"ipv4_network = \"10.1.2.3/16\"",
		"ipv4_network = \"10.1.0.0\"\nipv4_netmask = \"255.255.0.0\"",
		"ipv4_network = \"10.1.0.0\"\nipv4_netmask = \"/16\"",
		"ipv4_network = \"10.1.0.0\"\nipv4_netmask = \"16\"",
		"ipv4_network = \"10.1.0.0/16\"\nipv4_netmask = \"255.255.0.0\"",
	} {
		t.Run(in, func(t *testing.T) {
			c, err := Parse([]byte(in), "f.toml")
			if err != nil || c.IPv4Network != want {
				t.Errorf("%v, %v", c, err)
			}
		})
	}
	if _, err := Parse([]byte("ipv4_network = \"10.1.0.0/16\"\nipv4_netmask = \"255.255.255.0\""), "f"); err == nil {
		t.Error("disagreeing netmask accepted")
	}
}

func TestRouteForms(t *testing.T) {
	c, err := Parse([]byte(`route = ["10.77.0.0/255.255.255.0", "192.168.5.7/24", "fd00::/64", "default"]
no_route = ["10.77.0.128/25"]`), "f.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("192.168.5.0/24"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	if !reflect.DeepEqual(c.Routes, want) || len(c.NoRoutes) != 1 {
		t.Fatalf("routes %v no_routes %v", c.Routes, c.NoRoutes)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ocgate.toml")
	os.WriteFile(path, []byte("auth = [\"plain[passwd=users.passwd]\"]\nserver_cert = \"c.pem\"\nserver_key = \"/abs/k.pem\"\n"), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.PlainPasswd() != filepath.Join(dir, "users.passwd") || c.ServerCert != filepath.Join(dir, "c.pem") || c.ServerKey != "/abs/k.pem" {
		t.Fatalf("passwd %q cert %q key %q", c.PlainPasswd(), c.ServerCert, c.ServerKey)
	}
}

func TestOcservKeysWarn(t *testing.T) {
	c, err := Parse([]byte("tls_priorities = \"NORMAL\"\nsec_mod_scale = 2\nipv6_netmask = \"fd00::/48\"\nmin_reauth_time = 60\n"), "f.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 3 || !strings.HasPrefix(c.Warnings[0], "f.toml:") {
		t.Fatalf("warnings %q", c.Warnings)
	}
	if c.BanTime != 60*time.Second {
		t.Fatalf("min_reauth_time: ban time %s", c.BanTime)
	}
}

func TestDefaultsRoundTrip(t *testing.T) {
	c, err := Parse([]byte(DefaultsTOML()), "defaults.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings: %q", c.Warnings)
	}
	c.Path, c.Dir, c.Warnings = "", "", nil
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Fatalf("defaults file parses to\n%+v\nwant\n%+v", c, d)
	}
}

func TestSOCKS5Keys(t *testing.T) {
	tests := []struct {
		name, in string
		err      string // substring of the error; "" = no error
		warn     string // substring of the only warning; "" = no warning
		listen   string
	}{
		{"off by default", "", "", "", ""},
		{"empty is off", "socks5_listen = \"\"\n", "", "", ""},
		{"loopback", "socks5_listen = \"127.0.0.1:1080\"\n", "", "", "127.0.0.1:1080"},
		{"localhost", "socks5_listen = \"localhost:1080\"\n", "", "", "localhost:1080"},
		{"ipv6 loopback", "socks5_listen = \"[::1]:1080\"\n", "", "", "[::1]:1080"},
		{"with auth", "socks5_listen = \"127.0.0.1:1080\"\nsocks5_user = \"u\"\nsocks5_password = \"p\"\n", "", "", "127.0.0.1:1080"},
		{"every address without auth", "socks5_listen = \"0.0.0.0:1080\"\n", "", "f.toml:1: socks5_listen: 0.0.0.0 is not a loopback address", "0.0.0.0:1080"},
		{"every address with auth", "socks5_listen = \"0.0.0.0:1080\"\nsocks5_user = \"u\"\nsocks5_password = \"p\"\n", "", "", "0.0.0.0:1080"},
		{"tun mode", "datapath = \"tun\"\n\nsocks5_listen = \"127.0.0.1:1080\"\n", "", "f.toml:3: socks5_listen: ignored with datapath = \"tun\"", "127.0.0.1:1080"},
		{"auth without listen", "socks5_user = \"u\"\nsocks5_password = \"p\"\n", "", "f.toml:1: socks5_user: has no effect without socks5_listen", ""},
		{"no port", "\nsocks5_listen = \"127.0.0.1\"\n", "f.toml:2: socks5_listen: \"127.0.0.1\": want HOST:PORT", "", ""},
		{"port zero", "socks5_listen = \"127.0.0.1:0\"\n", "f.toml:1: socks5_listen: \"127.0.0.1:0\": the port must be 1 to 65535", "", ""},
		{"port too big", "socks5_listen = \"127.0.0.1:65536\"\n", "f.toml:1: socks5_listen:", "", ""},
		{"named port", "socks5_listen = \"127.0.0.1:socks\"\n", "f.toml:1: socks5_listen:", "", ""},
		{"empty host", "socks5_listen = \":1080\"\n", "f.toml:1: socks5_listen: \":1080\": give the address to listen on", "", ""},
		{"host name", "socks5_listen = \"example.com:1080\"\n", "f.toml:1: socks5_listen: \"example.com:1080\": the host must be an IP address", "", ""},
		{"wrong type", "socks5_listen = 1080\n", "f.toml:1: socks5_listen:", "", ""},
		{"user without password", "socks5_listen = \"127.0.0.1:1080\"\n\nsocks5_user = \"u\"\n", "f.toml:3: socks5_user: set without socks5_password", "", ""},
		{"password without user", "socks5_listen = \"127.0.0.1:1080\"\nsocks5_user = \"\"\nsocks5_password = \"p\"\n", "f.toml:3: socks5_password: set without socks5_user", "", ""},
		{"user too long", "socks5_listen = \"127.0.0.1:1080\"\nsocks5_user = \"" + strings.Repeat("u", 256) + "\"\nsocks5_password = \"p\"\n", "f.toml:2: socks5_user: longer than 255 bytes", "", ""},
		{"password too long", "socks5_listen = \"127.0.0.1:1080\"\nsocks5_user = \"u\"\nsocks5_password = \"" + strings.Repeat("p", 256) + "\"\n", "f.toml:3: socks5_password: longer than 255 bytes", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "f.toml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.SOCKS5Listen != tc.listen {
				t.Errorf("SOCKS5Listen = %q, want %q", c.SOCKS5Listen, tc.listen)
			}
			switch {
			case tc.warn == "" && len(c.Warnings) != 0:
				t.Errorf("warnings %q, want none", c.Warnings)
			case tc.warn != "" && (len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], tc.warn)):
				t.Errorf("warnings %q, want one containing %q", c.Warnings, tc.warn)
			}
		})
	}
	c, err := Parse([]byte("socks5_listen = \"127.0.0.1:1080\"\nsocks5_user = \"u\"\nsocks5_password = \"p w\"\n"), "f.toml")
	if err != nil || c.SOCKS5User != "u" || c.SOCKS5Password != "p w" {
		t.Fatalf("credentials: %+v, %v", c, err)
	}
}

func TestIPv6Network(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{`ipv6_network = "fd00:77::/64"`, "fd00:77::/64", ""},
		{"ipv6_network = \"fd00:77::\"\nipv6_prefix = 48", "fd00:77::/48", ""},
		{"ipv6_network = \"fd00:77::/48\"\nipv6_subnet_prefix = 64", "fd00:77::/48", ""},
		{`ipv6_network = "fd00:77::"`, "", "needs a prefix length"},
		{`ipv6_network = "10.0.0.0/8"`, "", "not an IPv6 network"},
		{"ipv6_network = \"fd00:77::/64\"\nipv6_subnet_prefix = 64", "", "ipv6_subnet_prefix"},
		{"ipv6_network = \"fd00::/64\"\nipv6_subnet_prefix = 126", "", "128 or at most 124"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "t.toml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || c.IPv6Network.String() != tc.want {
				t.Errorf("%v %v, want %s", c, err, tc.want)
			}
		})
	}
}

func TestDNSKeys(t *testing.T) {
	c, err := Parse([]byte("dns_upstream = [\"127.0.0.53\", \"[::1]:5353\"]\nsplit_dns = [\"Corp.Example.\"]\ntunnel_all_dns = true\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DNSUpstream) != 2 || c.DNSUpstream[0].String() != "127.0.0.53:53" || c.DNSUpstream[1].String() != "[::1]:5353" ||
		len(c.SplitDNS) != 1 || c.SplitDNS[0] != "corp.example" || !c.TunnelAllDNS {
		t.Fatalf("%v %v %v", c.DNSUpstream, c.SplitDNS, c.TunnelAllDNS)
	}
	for in, want := range map[string]string{
		`dns_upstream = ["resolver.example"]`: "d.toml:1: dns_upstream:",
		`split_dns = ["a b"]`:                 "d.toml:1: split_dns:",
	} {
		t.Run(in, func(t *testing.T) {
			if _, err := Parse([]byte(in), "d.toml"); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v, want %q", err, want)
			}
		})
	}
}

// The authentication keys: certificate and password both required, a certificate alternative, OTP, groups.
func TestAuthKeys(t *testing.T) {
	c, err := Parse([]byte(`auth = ["certificate", "plain[passwd=users.passwd,otp=users.oath]"]
ca_cert = "ca.pem"
crl = "crl.pem"
cert_user_oid = "SAN(rfc822name)"
cert_group_oid = "2.5.4.11"
select_group = ["eng[Engineering]", "ops"]
auto_select_group = true
default_select_group = "DEFAULT"
`), "/etc/ocgate/f.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Auth) != 2 || c.Auth[1].Params["otp"] != "/etc/ocgate/users.oath" || c.CRL != "/etc/ocgate/crl.pem" ||
		c.CertUserOID != "SAN(rfc822name)" || c.CertGroupOID != "2.5.4.11" || !c.AutoSelectGroup || c.DefaultSelectGroup != "DEFAULT" {
		t.Fatalf("%+v", c)
	}
	if want := []GroupChoice{{"eng", "Engineering"}, {"ops", "ops"}}; !reflect.DeepEqual(c.SelectGroups, want) {
		t.Fatalf("select_group %+v, want %+v", c.SelectGroups, want)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings %q", c.Warnings)
	}
	if Default().CertUserOID != "2.5.4.3" {
		t.Fatalf("cert_user_oid defaults to %q", Default().CertUserOID)
	}
}

func TestClusterKeys(t *testing.T) {
	for _, tc := range []struct {
		name, conf, err string
	}{
		{"off", ``, ""},
		{"on", "redis_url = \"redis://127.0.0.1:6379/0\"\ncookie_key_file = \"keys\"\ninstance_id = \"a\"", ""},
		{"tls", "redis_url = \"rediss://r.example:6380/2\"\ncookie_key_file = \"keys\"", ""},
		{"no keys", `redis_url = "redis://127.0.0.1:6379/0"`, "needs cookie_key_file"},
		{"bad scheme", "redis_url = \"http://x\"\ncookie_key_file = \"keys\"", "want redis://"},
		{"bad mode", `redis_unavailable = "maybe"`, "redis_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.conf), "/etc/ocgate/f.toml")
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.RedisUnavailable != "refuse" {
					t.Errorf("redis_unavailable = %q, want the default refuse", c.RedisUnavailable)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want one containing %q", err, tc.err)
			}
		})
	}
}
