package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// Every key of the table is in `ocgate config defaults`, and a file setting it to its printed default loads, without
// warnings, to the defaults.
func TestEveryKeyInDefaults(t *testing.T) {
	out := DefaultsTOML()
	for _, k := range keyTable {
		t.Run(k.name, func(t *testing.T) {
			var line string
			switch {
			case k.status != applied:
				line = "#   " + k.name + " (ocserv: " + k.ocservName() + "): "
			case k.def == "":
				line = "# " + k.name + " = " + k.ex + "\n"
			default:
				line = "\n" + k.name + " = " + k.def + "\n"
			}
			if !strings.Contains(out, line) {
				t.Fatalf("defaults lack %q", line)
			}
			if n := k.ocservName(); k.status == applied && !strings.Contains(out, " ocserv: "+n+".\n") && n != "" {
				t.Errorf("defaults do not give ocserv's name %s", n)
			}
			if k.status != applied || k.def == "" {
				return
			}
			c, err := Parse([]byte(k.name+" = "+k.def+"\n"), "f.toml")
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Warnings) != 0 {
				t.Fatalf("warnings %q", c.Warnings)
			}
			c.Path, c.Dir = "", ""
			c.Warnings = nil
			if d := Default(); !reflect.DeepEqual(c, d) {
				t.Fatalf("%s = %s parses to\n%+v\nwant\n%+v", k.name, k.def, c, d)
			}
		})
	}
}

// Every Config field is set by some key, so a new field cannot be left unparsed; every field a key names exists,
// and per-user fields take the key's value type.
func TestEveryFieldBound(t *testing.T) {
	bound := map[string]bool{}
	ct, ut := reflect.TypeFor[Config](), reflect.TypeFor[UserConfig]()
	for _, k := range keyTable {
		if k.field != "" {
			if _, ok := ct.FieldByName(k.field); !ok {
				t.Errorf("%s: Config has no field %s", k.name, k.field)
			}
			bound[k.field] = true
		}
		if k.scope != userOnly && (k.conv != nil || k.set != nil) == (k.status != applied) {
			t.Errorf("%s: applied keys, and only they, have a converter or a set function", k.name)
		}
		if k.conv != nil && k.set != nil {
			t.Errorf("%s: both a converter and a set function", k.name)
		}
		if k.conv != nil && k.field == "" {
			t.Errorf("%s: a converter without a field", k.name)
		}
		if k.def == "" && k.ex == "" && k.status == applied {
			t.Errorf("%s: neither a default nor an example", k.name)
		}
		if k.userField != "" {
			uf, ok := ut.FieldByName(k.userField)
			cf, _ := ct.FieldByName(k.field)
			if !ok || uf.Type != cf.Type {
				t.Errorf("%s: UserConfig.%s missing or not of type %s", k.name, k.userField, cf.Type)
			}
			if k.conv == nil || k.scope == global {
				t.Errorf("%s: a per-user field needs a converter and a per-user scope", k.name)
			}
		}
	}
	for f := range ct.Fields() {
		if !bound[f.Name] && f.Name != "Path" && f.Name != "Dir" && f.Name != "Warnings" {
			t.Errorf("Config.%s is set by no key", f.Name)
		}
	}
}

// Each ocserv key accepted without effect warns, naming it; the global file refuses per-user-only keys and the
// per-user files refuse global ones.
func TestAcceptedKeys(t *testing.T) {
	for _, k := range keyTable {
		if k.status == applied {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			c, err := Parse([]byte("\n"+k.name+" = true\n"), "f.toml")
			if k.scope == userOnly {
				if err == nil || !strings.Contains(err.Error(), "f.toml:2: "+k.name+": allowed only in per-user") {
					t.Fatalf("global file: %v", err)
				}
				return
			}
			want := "f.toml:2: " + k.name + ": accepted but not implemented yet"
			if k.status == ignored {
				want = "f.toml:2: " + k.name + ": ignored: " + k.why
			}
			if err != nil || len(c.Warnings) != 1 || c.Warnings[0] != want {
				t.Fatalf("warnings %q, %v; want %q", c.Warnings, err, want)
			}
		})
	}
}

// A key kept without effect warns when set to other than its default; a netstack key warns with the tun datapath.
func TestInertAndNetstackKeys(t *testing.T) {
	tests := []struct{ name, in, warn string }{
		{"crl without ca_cert", "crl = \"/etc/crl.pem\"\n", "f.toml:1: crl: has no effect without ca_cert"},
		{"try_mtu_discovery", "try_mtu_discovery = true\n", "f.toml:1: try_mtu_discovery: not implemented yet"},
		{"ban_points_kkdcp", "ban_points_kkdcp = 5\n", "f.toml:1: ban_points_kkdcp: has no effect: KKDCP is not supported"},
		{"egress_deny in tun mode", "datapath = \"tun\"\negress_deny = [\"10.0.0.0/8\"]\n", "f.toml:2: egress_deny: ignored with datapath = \"tun\""},
		{"flow_log in tun mode", "datapath = \"tun\"\nflow_log = \"-\"\n", "f.toml:2: flow_log: ignored with datapath = \"tun\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "f.toml")
			if err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], tc.warn) {
				t.Fatalf("warnings %q, %v; want one starting %q", c.Warnings, err, tc.warn)
			}
		})
	}
	// The values are kept: the netstack keys in tun mode, and the inert ones.
	c, err := Parse([]byte("datapath = \"tun\"\negress_deny = [\"10.0.0.0/8\"]\nca_cert = \"ca.pem\"\n"), "/etc/ocgate/f.toml")
	if err != nil || len(c.EgressDeny) != 1 || c.CACert != "/etc/ocgate/ca.pem" {
		t.Fatalf("%+v, %v", c, err)
	}
}

// A per-user file setting each per-user key to its default is accepted; keys implemented per user are applied,
// the others warn.
func TestPerUserKeys(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(nil, filepath.Join(dir, "ocgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c.ConfigPerUser = dir
	for _, k := range keyTable {
		if k.scope == global || k.status != applied || k.def == "" {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "u"), []byte(k.name+" = "+k.def+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			u, err := c.UserConfig("u", nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case k.perUserApplied() && len(u.Warnings) != 0:
				t.Fatalf("applied per user, but warnings %q", u.Warnings)
			case !k.perUserApplied() && (len(u.Warnings) != 1 || !strings.Contains(u.Warnings[0], "ignored per user: "+k.userWhy)):
				t.Fatalf("warnings %q, want \"ignored per user: %s\"", u.Warnings, k.userWhy)
			}
		})
	}
}

// Every key a per-user or per-group file may set is applied there or ignored with a reason: none is accepted
// silently (ocserv's per-user keys are all in the table).
func TestNoPerUserKeySilentlyIgnored(t *testing.T) {
	for _, k := range keyTable {
		if k.scope != global && k.status == applied && !k.perUserApplied() && k.userWhy == "" {
			t.Errorf("%s: allowed per user but neither applied there nor given a reason (userWhy)", k.name)
		}
	}
	ocservPerUser := []string{"no_udp", "restrict_user_to_routes", "tunnel_all_dns", "deny_roaming", "route", "no_route",
		"iroute", "dns", "ipv4_dns", "ipv6_dns", "nbns", "ipv4_nbns", "ipv6_nbns", "ipv4_network", "ipv6_network",
		"ipv4_netmask", "ipv6_prefix", "ipv6_subnet_prefix", "explicit_ipv4", "explicit_ipv6", "hostname",
		"restrict_user_to_ports", "rx_data_per_sec", "tx_data_per_sec", "net_priority", "mtu", "dpd", "mobile_dpd",
		"idle_timeout", "mobile_idle_timeout", "keepalive", "cgroup", "user_profile", "session_timeout",
		"max_same_clients", "stats_report_time", "split_dns"}
	for _, name := range ocservPerUser {
		if k := keyByName[name]; k == nil || k.scope == global {
			t.Errorf("%s: not allowed in per-user files", name)
		}
	}
}

// The loader never panics, and every error it returns names the file and a line.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultsTOML()))
	f.Add([]byte("route = [\"default\"]\nipv4_network = \"1.2.3.4\"\nipv4_netmask = \"/8\""))
	errLine := regexp.MustCompile(`^fuzz\.toml:\d+: `)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse(in, "fuzz.toml")
		if err == nil {
			if c == nil {
				t.Fatal("no configuration and no error")
			}
			return
		}
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			if !errLine.MatchString(e.Error()) {
				t.Fatalf("error without file and line: %q", e.Error())
			}
		}
	})
}

// occtl_socket_file is ocserv's name for socket_file, which wins when both are set.
func TestSocketFileSynonym(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"default", "", ""},
		{"occtl name", "occtl_socket_file = \"a.sock\"\n", "/etc/ocgate/a.sock"},
		{"ocgate name", "socket_file = \"b.sock\"\n", "/etc/ocgate/b.sock"},
		{"both set", "occtl_socket_file = \"a.sock\"\nsocket_file = \"b.sock\"\n", "/etc/ocgate/b.sock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "/etc/ocgate/f.toml")
			if err != nil || c.SocketFile != tc.want || len(c.Warnings) != 0 {
				t.Fatalf("SocketFile %q, warnings %q, %v; want %q", c.SocketFile, c.Warnings, err, tc.want)
			}
		})
	}
}

func TestChanged(t *testing.T) {
	a, _ := Parse([]byte("route = [\"10.1.0.0/16\"]\ntcp_port = 443\nmin_reauth_time = 60\n"), "f.toml")
	b, _ := Parse([]byte("route = [\"10.2.0.0/16\"]\ntcp_port = 443\nban_time = 70\n"), "f.toml")
	got := Changed(a, b)
	if strings.Join(got, ",") != "route,ban_time" && strings.Join(got, ",") != "ban_time,route" {
		t.Fatalf("changed %q", got)
	}
	if !PerSession("route") || PerSession("tcp_port") {
		t.Fatal("PerSession")
	}
}
