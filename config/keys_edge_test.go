package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestEdgeKeys(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		err      string // substring of the error; "" = no error
	}{
		{"off by default", "", ""},
		{"PROXY protocol with a trust list", "listen_proxy_proto = true\ntrusted_proxies = [\"10.0.0.2/32\", \"fd00::2\"]\n", ""},
		{"a bad trust list", "trusted_proxies = [\"balancer\"]\n", "f.toml:1: trusted_proxies: \"balancer\" is not an address or CIDR"},
		{"clear socket", "listen_clear_file = \"clear.socket\"\n", ""},
		{"clear TCP on loopback", "listen_clear = \"127.0.0.1:8080\"\n", ""},
		{"clear TCP on localhost", "listen_clear = \"localhost:8080\"\n", ""},
		{"clear TCP elsewhere is refused", "listen_clear = \"10.1.1.1:8080\"\n",
			"f.toml:1: listen_clear: \"10.1.1.1:8080\" is not a loopback address"},
		{"clear TCP on every address is refused", "listen_clear = \"0.0.0.0:8080\"\n", "is not a loopback address"},
		{"clear TCP elsewhere when allowed", "listen_clear = \"10.1.1.1:8080\"\nlisten_clear_remote = true\n", ""},
		{"clear TCP without port", "listen_clear = \"127.0.0.1\"\n", "f.toml:1: listen_clear: \"127.0.0.1\": want HOST:PORT, e.g. \"127.0.0.1:8080\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "f.toml")
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestTrusts(t *testing.T) {
	c := Default()
	for a, want := range map[string]bool{"127.0.0.1": true, "127.9.9.9": true, "::1": true, "::ffff:127.0.0.1": true,
		"10.0.0.2": false, "192.0.2.1": false} {
		if got := c.Trusts(netip.MustParseAddr(a)); got != want {
			t.Errorf("default Trusts(%s) = %v, want %v", a, got, want)
		}
	}
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30")}
	for a, want := range map[string]bool{"10.0.0.2": true, "::ffff:10.0.0.3": true, "10.0.0.4": false, "127.0.0.1": false} {
		if got := c.Trusts(netip.MustParseAddr(a)); got != want {
			t.Errorf("Trusts(%s) with 10.0.0.0/30 = %v, want %v", a, got, want)
		}
	}
}
