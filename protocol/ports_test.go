package protocol

import (
	"net/netip"
	"slices"
	"testing"

	"ocgate/config"
)

func TestPortsScriptEnvAndCheck(t *testing.T) {
	for _, tc := range []struct{ in, env string }{
		{"tcp(443), tcp(80), udp(443), sctp(99), icmp(), esp(), icmpv6()", "OCSERV_ALLOW_PORTS=tcp 443 tcp 80 udp 443 sctp 99 icmp all esp all icmpv6 all "},
		{"!(tcp(25), udp(161))", "OCSERV_DENY_PORTS=tcp 25 udp 161 "},
		{"", ""},
	} {
		r, err := config.ParsePorts(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		env := appendPortsEnv([]string{"X=1"}, &config.UserConfig{Ports: r})
		if want := slices.DeleteFunc([]string{"X=1", tc.env}, func(s string) bool { return s == "" }); !slices.Equal(env, want) {
			t.Errorf("%q: env %q, want %q", tc.in, env, want)
		}
	}
	if env := appendPortsEnv(nil, nil); env != nil {
		t.Errorf("no user configuration: %q", env)
	}

	r, _ := config.ParsePorts("tcp(443)")
	dns := netip.MustParseAddr("10.0.0.53")
	s := &Session{ucfg: &config.UserConfig{Ports: r}, pcfg: sessionPolicy{dns: []netip.Addr{dns}}}
	allow := s.allowPort()
	for _, tc := range []struct {
		proto uint8
		dst   string
		want  bool
	}{
		{6, "192.0.2.1:443", true},
		{6, "192.0.2.1:80", false},
		{17, "10.0.0.53:53", true}, // DNS to the pushed server, as ocserv-fw allows it
		{6, "10.0.0.53:53", true},
		{17, "10.0.0.54:53", false},
		{17, "10.0.0.53:54", false},
		{1, "10.0.0.53:0", false},
	} {
		if got := allow(tc.proto, netip.MustParseAddrPort(tc.dst)); got != tc.want {
			t.Errorf("%d %s: %v, want %v", tc.proto, tc.dst, got, tc.want)
		}
	}
	if (&Session{ucfg: &config.UserConfig{}}).allowPort() != nil {
		t.Error("a check without rules")
	}
}
