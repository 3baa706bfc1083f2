package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in   string
		want PortRules
		str  string // String(); "" = in
	}{
		{"", PortRules{}, ""},
		{"  ", PortRules{}, ""},
		{"tcp(443), tcp(80), udp(443), sctp(99), tcp(583), icmp(), icmpv6()", PortRules{Rules: []PortRule{
			{ProtoTCP, 443}, {ProtoTCP, 80}, {ProtoUDP, 443}, {ProtoSCTP, 99}, {ProtoTCP, 583}, {ProtoICMP, 0}, {ProtoICMPv6, 0},
		}}, ""},
		{"!(tcp(443), tcp(80))", PortRules{Deny: true, Rules: []PortRule{{ProtoTCP, 443}, {ProtoTCP, 80}}}, ""},
		{" ! ( TCP ( 22 ) ,UDP(53),esp( ) ) ", PortRules{Deny: true, Rules: []PortRule{{ProtoTCP, 22}, {ProtoUDP, 53}, {ProtoESP, 0}}},
			"!(tcp(22), udp(53), esp())"},
		{"tcp(65535)", PortRules{Rules: []PortRule{{ProtoTCP, 65535}}}, ""},
	}
	for _, tc := range tests {
		got, err := ParsePorts(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		want := tc.str
		if want == "" {
			want = strings.TrimSpace(tc.in)
		}
		if got.String() != want {
			t.Errorf("%q: String() = %q, want %q", tc.in, got.String(), want)
		}
	}
	for _, in := range []string{
		"tcp", "tcp()", "tcp(0)", "tcp(65536)", "tcp(http)", "tcp(443", "tcp(443))", "tcp(443) udp(53)",
		"icmp(8)", "gre()", "tcp(443),", ",tcp(443)", "!tcp(22)", "!(tcp(22)", "!(tcp(22)))", "tcp(80), !(tcp(22))",
	} {
		if r, err := ParsePorts(in); err == nil {
			t.Errorf("%q accepted: %+v", in, r)
		}
	}
}

func TestLimitKeys(t *testing.T) {
	c, err := Parse([]byte("max_flows_per_session = 4\nmax_half_open_per_session = 2\nmax_dials_in_flight = 10\n"+
		"tcp_keepalive = 0\nudp_idle_timeout = 5\nrestrict_user_to_ports = \"tcp(443)\"\n"), "f.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxFlowsPerSession != 4 || c.MaxHalfOpenPerSession != 2 || c.MaxDialsInFlight != 10 || c.TCPKeepalive != 0 ||
		c.UDPIdleTimeout != 5*time.Second || c.RestrictUserToPorts.String() != "tcp(443)" || len(c.Warnings) != 0 {
		t.Fatalf("%+v", c)
	}
	d := Default()
	if d.MaxFlowsPerSession != 1024 || d.MaxHalfOpenPerSession != 64 || d.MaxDialsInFlight != 1024 ||
		d.TCPKeepalive != 30*time.Second || d.UDPIdleTimeout != 60*time.Second || !d.RestrictUserToPorts.Empty() {
		t.Fatalf("defaults %+v", d)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"zero flows", "\nmax_flows_per_session = 0\n", "f.toml:2: max_flows_per_session: 0 is out of range (1 to 1048576)"},
		{"negative half-open", "max_half_open_per_session = -1\n", "f.toml:1: max_half_open_per_session: -1 is out of range"},
		{"zero dials", "max_dials_in_flight = 0\n", "f.toml:1: max_dials_in_flight: 0 is out of range"},
		{"negative keepalive", "tcp_keepalive = -1\n", "f.toml:1: tcp_keepalive: -1 is not a valid number of seconds"},
		{"zero udp idle", "udp_idle_timeout = 0\n", "f.toml:1: udp_idle_timeout: must be at least 1 second"},
		{"ports type", "restrict_user_to_ports = [\"tcp(443)\"]\n", "f.toml:1: restrict_user_to_ports:"},
		{"ports syntax", "\n\nrestrict_user_to_ports = \"tcp(443), ftp(21)\"\n",
			`f.toml:3: restrict_user_to_ports: "ftp(21)": unknown protocol`},
		{"ports negation", "restrict_user_to_ports = \"!tcp(22)\"\n", `f.toml:1: restrict_user_to_ports: "!" must be followed by "("`},
		{"ports range", "restrict_user_to_ports = \"udp(0)\"\n", "f.toml:1: restrict_user_to_ports: \"udp(0)\": udp needs a port from 1 to 65535"},
	} {
		_, err := Parse([]byte(tc.in), "f.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
	// With the kernel datapath the netstack's limits do nothing: said when changed from their defaults.
	c, err = Parse([]byte("datapath = \"tun\"\nmax_flows_per_session = 1024\nmax_dials_in_flight = 9\n"+
		"restrict_user_to_ports = \"tcp(22)\"\n"), "f.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "f.toml:3: max_dials_in_flight: ignored with datapath = \"tun\"") {
		t.Fatalf("warnings %q", c.Warnings)
	}
}

func TestUserConfigPorts(t *testing.T) {
	const global = perDirs + "restrict_user_to_ports = \"tcp(443), udp(53)\"\n"
	c := userSetup(t, global, map[string]string{
		"users/replaced": "restrict_user_to_ports = \"tcp(22)\"\n",
		"users/empty":    "restrict_user_to_ports = \"\"\n",
		"users/both":     "restrict_user_to_ports = \"tcp(8080)\"\n",
		"groups/g":       "restrict_user_to_ports = \"tcp(80)\"\n",
		"users/mixed":    "dpd = 5\nrestrict_user_to_ports = \"!(tcp(25))\"\n",
		"users/bad":      "dpd = 5\n\nrestrict_user_to_ports = \"tcp(22), gre()\"\n",
	})
	for _, tc := range []struct {
		user   string
		groups []string
		want   string
		warn   string
	}{
		{"nobody", nil, "tcp(443), udp(53)", ""},
		{"replaced", nil, "tcp(22)", ""},
		{"empty", nil, "tcp(443), udp(53)", ""}, // as in ocserv, an empty per-user list leaves the global one
		{"nobody", []string{"g"}, "tcp(80)", ""},
		{"both", []string{"g"}, "tcp(80), tcp(8080)", ""}, // group then user, one list
		{"mixed", []string{"g"}, "!(tcp(80), tcp(25))", `users/mixed:2: restrict_user_to_ports: combined with "tcp(80)"`},
	} {
		u, err := c.UserConfig(tc.user, tc.groups)
		if err != nil {
			t.Fatalf("%s: %v", tc.user, err)
		}
		if u.Ports.String() != tc.want {
			t.Errorf("%s %v: ports %q, want %q", tc.user, tc.groups, u.Ports.String(), tc.want)
		}
		if tc.warn != "" && (len(u.Warnings) != 1 || !strings.Contains(u.Warnings[0], tc.warn)) {
			t.Errorf("%s: warnings %q, want %q", tc.user, u.Warnings, tc.warn)
		}
	}
	if _, err := c.UserConfig("bad", nil); err == nil || !strings.Contains(err.Error(), `users/bad:3: restrict_user_to_ports: "gre()": unknown protocol`) {
		t.Fatalf("bad file: %v", err)
	}
	// The global list is not changed by a session's.
	if c.RestrictUserToPorts.String() != "tcp(443), udp(53)" {
		t.Fatalf("global list now %q", c.RestrictUserToPorts.String())
	}
	// The netstack's limits are global only.
	c = userSetup(t, perDirs, map[string]string{"users/u": "max_flows_per_session = 3\n"})
	if _, err := c.UserConfig("u", nil); err == nil || !strings.Contains(err.Error(), "users/u:1: max_flows_per_session: not allowed in a per-user") {
		t.Fatalf("per-user limit: %v", err)
	}
}
