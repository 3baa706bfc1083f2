package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// userSetup writes ocgate.toml (global) and the files (paths relative to the directory) and loads the
// configuration.
func userSetup(t *testing.T, global string, files map[string]string) *Config {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "ocgate.toml")
	if err := os.WriteFile(path, []byte(global), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pfxs(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

const perDirs = `config_per_user = "users"
config_per_group = "groups"
`

func TestUserConfig(t *testing.T) {
	const global = perDirs + `ipv4_network = "10.250.0.0/24"
route = ["10.0.0.0/8"]
no_route = ["10.9.0.0/16"]
dns = ["10.0.0.53"]
dpd = 90
idle_timeout = 600
max_same_clients = 2
`
	files := map[string]string{
		"groups/staff": "route = [\"10.1.0.0/16\"]\ndpd = 60\nidle_timeout = 100\nrestrict_user_to_routes = true\n",
		"users/alice":  "route = [\"10.2.0.0/16\"]\ndpd = 30\nrestrict_user_to_routes = false\ndns = [\"1.1.1.1\"]\n",
		"users/bob":    "iroute = [\"192.168.50.0/24\", \"fd00:50::/64\"]\nexplicit_ipv4 = \"10.250.0.77\"\nclient_to_client = false\n",
		"users/carol":  "route = []\nmax_same_clients = 0\nrx_data_per_sec = 1000\nsession_timeout = 3600\n",
		"users/dave":   "route = [\"default\"]\nno_route = []\n",
	}
	c := userSetup(t, global, files)
	dir := c.Dir
	tests := []struct {
		name   string
		user   string
		groups []string
		check  func(*UserConfig) bool
	}{
		{"no files: the global values", "nobody", nil, func(u *UserConfig) bool {
			return reflect.DeepEqual(u.Routes, pfxs("10.0.0.0/8")) && u.DPD == 90*time.Second && len(u.Files) == 0 &&
				u.ClientToClient && !u.RestrictToRoutes && u.MaxSameClients == 2 && u.DNS[0].String() == "10.0.0.53"
		}},
		{"group overrides global", "nobody", []string{"staff"}, func(u *UserConfig) bool {
			return reflect.DeepEqual(u.Routes, pfxs("10.1.0.0/16")) && u.DPD == 60*time.Second &&
				u.IdleTimeout == 100*time.Second && u.RestrictToRoutes &&
				reflect.DeepEqual(u.NoRoutes, pfxs("10.9.0.0/16")) &&
				reflect.DeepEqual(u.Files, []string{filepath.Join(dir, "groups/staff")})
		}},
		{"user overrides group; route lists add up", "alice", []string{"staff", "other"}, func(u *UserConfig) bool {
			return reflect.DeepEqual(u.Routes, pfxs("10.1.0.0/16", "10.2.0.0/16")) && u.DPD == 30*time.Second &&
				u.IdleTimeout == 100*time.Second && !u.RestrictToRoutes && u.DNS[0].String() == "1.1.1.1" &&
				reflect.DeepEqual(u.Files, []string{filepath.Join(dir, "groups/staff"), filepath.Join(dir, "users/alice")})
		}},
		{"only the first group is read", "nobody", []string{"other", "staff"}, func(u *UserConfig) bool {
			return u.DPD == 90*time.Second && len(u.Files) == 0
		}},
		{"iroute, explicit_ipv4, client_to_client", "bob", nil, func(u *UserConfig) bool {
			return reflect.DeepEqual(u.IRoutes, pfxs("192.168.50.0/24", "fd00:50::/64")) &&
				u.ExplicitIPv4 == netip.MustParseAddr("10.250.0.77") && !u.ClientToClient &&
				reflect.DeepEqual(u.Routes, pfxs("10.0.0.0/8"))
		}},
		{"route = [] is a full tunnel; zero overrides", "carol", nil, func(u *UserConfig) bool {
			return len(u.Routes) == 0 && u.MaxSameClients == 0 && u.RxDataPerSec == 1000 &&
				u.SessionTimeout == time.Hour
		}},
		{"default route, no_route cleared", "dave", nil, func(u *UserConfig) bool {
			return reflect.DeepEqual(u.Routes, pfxs("0.0.0.0/0", "::/0")) && len(u.NoRoutes) == 0
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := c.UserConfig(tc.user, tc.groups)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(u) {
				t.Errorf("%+v", u)
			}
		})
	}
	// The global configuration is not modified by the sessions' lists.
	if !reflect.DeepEqual(c.Routes, pfxs("10.0.0.0/8")) {
		t.Fatalf("global routes now %v", c.Routes)
	}
}

func TestUserConfigDefaultFiles(t *testing.T) {
	const global = perDirs + `default_user_config = "defaults/user.toml"
default_group_config = "defaults/group.toml"
`
	c := userSetup(t, global, map[string]string{
		"defaults/user.toml":  "dpd = 11\n",
		"defaults/group.toml": "dpd = 22\nkeepalive = 33\nroute = [\"10.3.0.0/16\"]\n",
		"users/alice":         "route = [\"10.4.0.0/16\"]\n",
		"groups/staff":        "keepalive = 44\n",
	})
	tests := []struct {
		user           string
		groups         []string
		dpd, keepalive time.Duration
		routes         []netip.Prefix
		files          []string
	}{
		{"nobody", nil, 11 * time.Second, 32400 * time.Second, nil, []string{"defaults/user.toml"}},
		{"nobody", []string{"nogroup"}, 11 * time.Second, 33 * time.Second, pfxs("10.3.0.0/16"),
			[]string{"defaults/group.toml", "defaults/user.toml"}},
		{"alice", []string{"nogroup"}, 22 * time.Second, 33 * time.Second, pfxs("10.3.0.0/16", "10.4.0.0/16"),
			[]string{"defaults/group.toml", "users/alice"}},
		{"alice", []string{"staff"}, 90 * time.Second, 44 * time.Second, pfxs("10.4.0.0/16"),
			[]string{"groups/staff", "users/alice"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %v", tc.user, tc.groups), func(t *testing.T) {
			u, err := c.UserConfig(tc.user, tc.groups)
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, f := range tc.files {
				files = append(files, filepath.Join(c.Dir, f))
			}
			if u.DPD != tc.dpd || u.Keepalive != tc.keepalive || !reflect.DeepEqual(u.Routes, tc.routes) ||
				!reflect.DeepEqual(u.Files, files) {
				t.Errorf("dpd %s keepalive %s routes %v files %q", u.DPD, u.Keepalive, u.Routes, u.Files)
			}
		})
	}
}

func TestUserConfigErrors(t *testing.T) {
	const global = perDirs + "ipv4_network = \"10.250.0.0/24\"\n"
	tests := []struct {
		name, file, want string
	}{
		{"unknown key", "dpd = 30\n\nno_such_key = 1\n", "users/u:3: no_such_key: unknown key"},
		{"global-only key", "tcp_port = 443\n", "users/u:1: tcp_port: not allowed in a per-user or per-group file"},
		{"global-only ignored key", "\ntls_priorities = \"NORMAL\"\n", "users/u:2: tls_priorities: not allowed"},
		{"unknown table", "[vhost]\nx = 1\n", "users/u:1: vhost.x: unknown key"},
		{"wrong type", "dpd = \"30\"\n", "users/u:1: dpd:"},
		{"syntax", "dpd = = 3\n", "users/u:1"},
		{"bad route", "route = [\"10.0.0.0/8\", \"x\"]\n", "users/u:1: route: \"x\" is not a route"},
		{"bad iroute", "iroute = [\"default\"]\n", "users/u:1: iroute: \"default\" is not an address or CIDR"},
		{"iroute /0", "iroute = [\"0.0.0.0/0\"]\n", "users/u:1: iroute: 0.0.0.0/0: a default route cannot be an iroute"},
		{"explicit_ipv4 outside the user's pool", "ipv4_network = \"10.9.0.0/24\"\nexplicit_ipv4 = \"10.250.0.9\"\n",
			"explicit_ipv4: \"10.250.0.9\": outside ipv4_network 10.9.0.0/24"},
		{"explicit_ipv6 without IPv6", "explicit_ipv6 = \"fd00::9\"\n", "explicit_ipv6: \"fd00::9\": no ipv6_network"},
		{"explicit_ipv6 server", "ipv6_network = \"fd00:9::/64\"\nexplicit_ipv6 = \"fd00:9::1\"\n", "the server's own prefix"},
		{"explicit_ipv6 outside", "ipv6_network = \"fd00:9::/64\"\nexplicit_ipv6 = \"fd00:8::9\"\n", "outside ipv6_network"},
		{"explicit_ipv6 v4", "explicit_ipv6 = \"10.1.1.1\"\n", "not an IPv6 address"},
		{"user pool too small", "ipv4_network = \"10.9.0.0/31\"\n", "users/u:1: ipv4_network: 10.9.0.0/31: the pool must be"},
		{"explicit_ipv4 outside the pool", "explicit_ipv4 = \"10.9.9.9\"\n",
			"users/u:1: explicit_ipv4: \"10.9.9.9\": outside ipv4_network 10.250.0.0/24"},
		{"explicit_ipv4 network", "explicit_ipv4 = \"10.250.0.0\"\n", "the network address"},
		{"explicit_ipv4 broadcast", "explicit_ipv4 = \"10.250.0.255\"\n", "the broadcast address"},
		{"explicit_ipv4 server", "explicit_ipv4 = \"10.250.0.1\"\n", "the server's own address"},
		{"explicit_ipv4 v6", "explicit_ipv4 = \"fd00::1\"\n", "not an IPv4 address"},
		{"negative duration", "idle_timeout = -1\n", "users/u:1: idle_timeout: -1 is not a valid number of seconds"},
		{"too large", "# " + strings.Repeat("x", maxUserFileSize) + "\n", "larger than 64 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := userSetup(t, global, map[string]string{"users/u": tc.file})
			_, err := c.UserConfig("u", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), filepath.Join(c.Dir, "users/u")) {
				t.Errorf("%v does not start with the file", err)
			}
		})
	}

	// Every error of a file is reported, and a broken group file refuses the session as well.
	c := userSetup(t, global, map[string]string{"users/u": "a = 1\nb = 2\n", "groups/g": "c = 3\n"})
	if _, err := c.UserConfig("u", []string{"g"}); err == nil || strings.Count(err.Error(), "unknown key") != 3 {
		t.Errorf("want three errors, got %v", err)
	}
}

func TestUserConfigWarnings(t *testing.T) {
	c := userSetup(t, perDirs, map[string]string{"users/u": "ipv6_subnet_prefix = 64\nnet_priority = 3\nstats_report_time = 60\ndpd = 5\n"})
	u, err := c.UserConfig("u", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"users/u:1: ipv6_subnet_prefix: ignored per user: every IPv6 pool hands out client prefixes of the global length",
		"users/u:2: net_priority: ignored", "users/u:3: stats_report_time: ignored: ocgate has no accounting"}
	if len(u.Warnings) != len(want) || u.DPD != 5*time.Second {
		t.Fatalf("warnings %q dpd %s", u.Warnings, u.DPD)
	}
	for i, w := range want {
		if !strings.Contains(u.Warnings[i], w) {
			t.Errorf("warning %q, want %q", u.Warnings[i], w)
		}
	}
}

func TestUserConfigNames(t *testing.T) {
	c := userSetup(t, perDirs, map[string]string{"users/ok": "dpd = 5\n", "secret": "dpd = 1\n"})
	for _, tc := range []struct {
		user   string
		groups []string
	}{
		{"../secret", nil}, {"a/b", nil}, {".hidden", nil}, {"..", nil}, {"", nil}, {"a\x00b", nil},
		{"ok", []string{"../secret"}}, {"ok", []string{".."}}, {"ok", []string{"x/y"}},
	} {
		t.Run(fmt.Sprintf("%q %q", tc.user, tc.groups), func(t *testing.T) {
			if u, err := c.UserConfig(tc.user, tc.groups); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("%+v, %v", u, err)
			}
		})
	}
	// An empty group is no group; without the directories, names are never paths.
	if _, err := c.UserConfig("ok", []string{""}); err != nil {
		t.Error(err)
	}
	c = userSetup(t, "", nil)
	if _, err := c.UserConfig("../secret", []string{"../x"}); err != nil {
		t.Error(err)
	}
}

func TestUserConfigMissing(t *testing.T) {
	const global = perDirs + "default_user_config = \"nope/user.toml\"\ndefault_group_config = \"nope/group.toml\"\n"
	c := userSetup(t, global, nil) // neither the directories nor the default files exist
	u, err := c.UserConfig("alice", []string{"staff"})
	if err != nil || len(u.Files) != 0 || u.DPD != 90*time.Second {
		t.Fatalf("%+v, %v", u, err)
	}
	if w, errs := c.CheckUserConfigs(); len(w)+len(errs) != 0 {
		t.Fatalf("check: %q %v", w, errs)
	}
}

func TestUserConfigNotRegular(t *testing.T) {
	c := userSetup(t, perDirs, map[string]string{"users/dir/x": ""})
	if _, err := c.UserConfig("dir", nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(c.ConfigPerUser, "fifo"), 0o644); err != nil {
		t.Skip(err)
	}
	if _, err := c.UserConfig("fifo", nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo: %v", err)
	}
}

func TestUserConfigReadEachTime(t *testing.T) {
	c := userSetup(t, perDirs, map[string]string{"users/u": "dpd = 5\n"})
	if u, _ := c.UserConfig("u", nil); u.DPD != 5*time.Second {
		t.Fatal(u.DPD)
	}
	os.WriteFile(filepath.Join(c.ConfigPerUser, "u"), []byte("dpd = 6\n"), 0o644)
	if u, _ := c.UserConfig("u", nil); u.DPD != 6*time.Second {
		t.Fatal(u.DPD)
	}
}

func TestExposeIRoutes(t *testing.T) {
	files := map[string]string{
		"users/bob":   "iroute = [\"192.168.50.0/24\"]\n",
		"users/carol": "iroute = [\"192.168.60.0/24\"]\n",
		"users/dave":  "route = []\n",
		"users/eve":   "bad = 1\niroute = [\"192.168.70.0/24\"]\n", // skipped: has an error
		"users/.old":  "iroute = [\"192.168.80.0/24\"]\n",          // skipped: never a user's file
	}
	c := userSetup(t, perDirs+"expose_iroutes = true\nroute = [\"10.0.0.0/8\"]\n", files)
	for _, tc := range []struct {
		user   string
		routes []netip.Prefix
	}{
		{"alice", pfxs("10.0.0.0/8", "192.168.50.0/24", "192.168.60.0/24")},
		{"bob", pfxs("10.0.0.0/8", "192.168.60.0/24")},
		{"dave", nil}, // full tunnel already
	} {
		t.Run(tc.user, func(t *testing.T) {
			u, err := c.UserConfig(tc.user, nil)
			if err != nil || !reflect.DeepEqual(u.Routes, tc.routes) {
				t.Errorf("routes %v, %v; want %v", u.Routes, err, tc.routes)
			}
		})
	}
}

func TestUserGlobalKeys(t *testing.T) {
	const global = perDirs + `default_user_config = "/etc/u.toml"
restrict_user_to_routes = true
client_to_client = false
expose_iroutes = true
`
	c := userSetup(t, global, nil)
	if c.ConfigPerUser != filepath.Join(c.Dir, "users") || c.ConfigPerGroup != filepath.Join(c.Dir, "groups") ||
		c.DefaultUserConfig != "/etc/u.toml" || !c.RestrictUserToRoutes || c.ClientToClient || !c.ExposeIRoutes {
		t.Fatalf("%+v", c)
	}
	if d := Default(); !d.ClientToClient || d.RestrictUserToRoutes {
		t.Fatal("defaults: client_to_client must be true and restrict_user_to_routes false")
	}
	c, err := Parse([]byte("default_group_config = \"g.toml\"\nexpose_iroutes = true\n"), "f.toml")
	if err != nil || len(c.Warnings) != 2 || !strings.Contains(c.Warnings[0], "has no effect without config_per_group") {
		t.Fatalf("%v %q", err, c.Warnings)
	}
	for _, in := range []string{"iroute = [\"10.0.0.0/8\"]\n", "explicit_ipv4 = \"10.250.77.9\"\n"} {
		_, err := Parse([]byte(in), "f.toml")
		if err == nil || !strings.Contains(err.Error(), "allowed only in per-user and per-group files") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestCheckUserConfigs(t *testing.T) {
	files := map[string]string{
		"users/good":    "dpd = 5\nipv6_subnet_prefix = 64\n",
		"users/bad":     "dpd = 5\ntcp_port = 1\n",
		"users/a":       "explicit_ipv4 = \"10.250.77.9\"\n",
		"users/b":       "explicit_ipv4 = \"10.250.77.9\"\n",
		"users/.swp":    "garbage garbage\n",
		"groups/g":      "nope = 1\n",
		"defaults.toml": "dpd = \"x\"\n",
	}
	c := userSetup(t, perDirs+"default_user_config = \"defaults.toml\"\n", files)
	warns, errs := c.CheckUserConfigs()
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{"users/bad:2: tcp_port: not allowed", "groups/g:1: nope: unknown key", "defaults.toml:1: dpd:"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q lack %q", joined, want)
		}
	}
	if len(errs) != 3 {
		t.Errorf("%d errors: %q", len(errs), joined)
	}
	w := strings.Join(warns, "\n")
	if len(warns) != 2 || !strings.Contains(w, "users/good:2: ipv6_subnet_prefix: ignored per user: every IPv6 pool") ||
		!strings.Contains(w, "users/b: explicit_ipv4: 10.250.77.9 is also the address of") {
		t.Errorf("warnings %q", warns)
	}
}

// ocserv's per-user keys that once warned "not implemented per user yet": each applied from a user file over the
// global value (lists: the group's and the user's lines add up).
func TestUserConfigOcservKeys(t *testing.T) {
	const global = perDirs + `dns = ["10.0.0.53"]
ipv6_dns = ["fd00::53"]
nbns = ["10.0.0.137"]
split_dns = ["corp.example"]
`
	tests := []struct {
		name, group, user string
		check             func(u *UserConfig) bool
	}{
		{"global only", "", "", func(u *UserConfig) bool {
			return fmt.Sprint(u.DNS, u.NBNS, u.SplitDNS) == "[10.0.0.53 fd00::53] [10.0.0.137] [corp.example]" && !u.NoUDP
		}},
		{"ipv4_dns and ipv6_dns add to dns", "ipv4_dns = [\"10.1.0.53\"]\n", "dns = [\"10.2.0.53\"]\nipv6_dns = \"fd01::53\"\n",
			func(u *UserConfig) bool { return fmt.Sprint(u.DNS) == "[10.1.0.53 10.2.0.53 fd01::53]" }},
		{"nbns synonyms", "nbns = [\"10.1.0.137\"]\n", "ipv4_nbns = [\"10.2.0.137\"]\n",
			func(u *UserConfig) bool { return fmt.Sprint(u.NBNS) == "[10.1.0.137 10.2.0.137]" }},
		{"split_dns", "", "split_dns = [\"Lab.Example.\", \"b.example\"]\n",
			func(u *UserConfig) bool { return fmt.Sprint(u.SplitDNS) == "[lab.example b.example]" }},
		{"single values", "no_udp = true\nhostname = \"grp\"\n", "hostname = \"pc-7\"\ntunnel_all_dns = true\ndeny_roaming = true\nmtu = 1300\n",
			func(u *UserConfig) bool {
				return u.NoUDP && u.Hostname == "pc-7" && u.TunnelAllDNS && u.DenyRoaming && u.MTU == 1300
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := userSetup(t, global, map[string]string{"users/u": tc.user, "groups/g": tc.group})
			u, err := c.UserConfig("u", []string{"g"})
			if err != nil || len(u.Warnings) != 0 || !tc.check(u) {
				t.Fatalf("%+v, %v", u, err)
			}
		})
	}
	for in, want := range map[string]string{
		"ipv4_dns = [\"fd00::1\"]\n":  "users/u:1: ipv4_dns: fd00::1 is not an IPv4 address",
		"ipv6_dns = [\"10.0.0.1\"]\n": "users/u:1: ipv6_dns: 10.0.0.1 is not an IPv6 address",
		"hostname = \"a b\"\n":        "users/u:1: hostname: \"a b\" is not a host name",
	} {
		c := userSetup(t, global, map[string]string{"users/u": in})
		if _, err := c.UserConfig("u", nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// ipv4_dns and ipv6_dns in the global file add to dns; route_add_cmd and route_del_cmd take ocserv's substitutions.
func TestOcservGlobalKeys(t *testing.T) {
	c, err := Parse([]byte("ipv4_dns = \"10.0.0.1\"\ndns = [\"10.0.0.2\"]\nipv6_dns = [\"fd00::1\"]\nnbns = \"10.0.0.3\"\n"+
		"route_add_cmd = \"ip route replace %{R} dev %{D} # %{RI} %{U} %{G}\"\n"), "f.toml")
	if err != nil || fmt.Sprint(c.DNS, c.NBNS) != "[10.0.0.2 10.0.0.1 fd00::1] [10.0.0.3]" || len(c.Warnings) != 0 ||
		c.RouteAddCmd != "ip route replace %{R} dev %{D} # %{RI} %{U} %{G}" {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, in := range []string{"route_add_cmd = \"ip route add %{X} dev %{D}\"", "route_del_cmd = \"echo 100%\""} {
		if _, err := Parse([]byte(in), "f.toml"); err == nil || !strings.Contains(err.Error(), "unknown substitution") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// ipv4_network and ipv6_network in per-user and per-group files give the session its own pools; the fixed
// addresses are checked against them (a group's network with the user's address), and an iroute may overlap a
// pool, as under ocserv.
func TestUserPools(t *testing.T) {
	files := map[string]string{
		"users/net":   "ipv4_network = \"10.9.0.0\"\nipv4_netmask = \"255.255.255.0\"\nexplicit_ipv4 = \"10.9.0.7\"\n",
		"users/six":   "ipv6_network = \"fd00:9::\"\nipv6_prefix = 64\nexplicit_ipv6 = \"fd00:9::9\"\n",
		"users/grp":   "explicit_ipv4 = \"10.8.0.9\"\n",
		"groups/g":    "ipv4_network = \"10.8.0.0/24\"\n",
		"users/inner": "iroute = [\"10.250.77.128/25\"]\n",
	}
	c := userSetup(t, perDirs, files)
	tests := []struct {
		name, user string
		groups     []string
		ok         func(u *UserConfig) bool
	}{
		{"the user's own IPv4 pool and a fixed address in it", "net", nil, func(u *UserConfig) bool {
			return u.IPv4Network == pfx("10.9.0.0/24") && u.ExplicitIPv4 == netip.MustParseAddr("10.9.0.7") &&
				u.IPv6Network == c.IPv6Network
		}},
		{"the user's own IPv6 pool and a fixed address in it", "six", nil, func(u *UserConfig) bool {
			return u.IPv6Network == pfx("fd00:9::/64") && u.ExplicitIPv6 == netip.MustParseAddr("fd00:9::9") &&
				u.IPv4Network == c.IPv4Network
		}},
		{"the group's pool with the user's fixed address", "grp", []string{"g"}, func(u *UserConfig) bool {
			return u.IPv4Network == pfx("10.8.0.0/24") && u.ExplicitIPv4 == netip.MustParseAddr("10.8.0.9")
		}},
		{"an iroute inside the global pool", "inner", nil, func(u *UserConfig) bool {
			return len(u.IRoutes) == 1 && u.IRoutes[0] == pfx("10.250.77.128/25")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := c.UserConfig(tc.user, tc.groups)
			if err != nil || !tc.ok(u) {
				t.Errorf("UserConfig(%q) = %+v, %v", tc.user, u, err)
			}
		})
	}
	// Without the group, the user's fixed address is outside the global pool: refused, naming the file.
	if _, err := c.UserConfig("grp", nil); err == nil || !strings.Contains(err.Error(), "outside ipv4_network") {
		t.Errorf("grp without its group: %v", err)
	}
	if got := c.UserNetworks(); !reflect.DeepEqual(got, pfxs("10.8.0.0/24", "10.9.0.0/24", "fd00:9::/64")) {
		t.Errorf("UserNetworks = %v", got)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
