package protocol

import (
	"slices"
	"testing"

	"ocgate/config"
	"ocgate/protocol/datapath"
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

	r, _ := config.ParsePorts("!(tcp(443), icmp())")
	s := &Session{ucfg: &config.UserConfig{Ports: r}}
	want := datapath.PortRules{Deny: true, Rules: []datapath.PortRule{{Proto: 6, Port: 443}, {Proto: 1}}}
	if got := s.portRules(); got.Deny != want.Deny || !slices.Equal(got.Rules, want.Rules) {
		t.Errorf("portRules: %+v, want %+v", got, want)
	}
	if got := (&Session{ucfg: &config.UserConfig{}}).portRules(); got.Deny || got.Rules != nil {
		t.Errorf("without rules: %+v", got)
	}
}
