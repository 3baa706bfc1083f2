//go:build linux

package privsep

import (
	"net/netip"
	"strings"
	"testing"

	"ocgate/egress/tun"
)

// TestHelperRefuses: the privileged helper refuses what its configuration does not allow, before touching
// anything: other device prefixes or server addresses, client addresses outside the pool, default iroutes,
// unknown operations, and script variables outside ocserv's list (LD_PRELOAD...).
func TestHelperRefuses(t *testing.T) {
	h := &helper{cfg: HelperConfig{Prefix: "vpns", Local: netip.MustParseAddr("10.250.77.1"),
		Pool: netip.MustParsePrefix("10.250.77.0/24"), Scripts: Scripts{Connect: "/bin/true"}}}
	good := tun.DeviceRequest{Prefix: "vpns", MTU: 1400, Local: h.cfg.Local, Peer: netip.MustParseAddr("10.250.77.5")}
	for name, tc := range map[string]struct {
		req  helperRequest
		want string
	}{
		"prefix":    {helperRequest{Op: "open", Device: with(good, func(d *tun.DeviceRequest) { d.Prefix = "eth" })}, "prefix"},
		"local":     {helperRequest{Op: "open", Device: with(good, func(d *tun.DeviceRequest) { d.Local = netip.MustParseAddr("10.0.0.1") })}, "server address"},
		"peer":      {helperRequest{Op: "open", Device: with(good, func(d *tun.DeviceRequest) { d.Peer = netip.MustParseAddr("192.168.1.1") })}, "outside the pool"},
		"gateway":   {helperRequest{Op: "open", Device: with(good, func(d *tun.DeviceRequest) { d.Peer = d.Local })}, "outside the pool"},
		"default":   {helperRequest{Op: "open", Device: with(good, func(d *tun.DeviceRequest) { d.Routes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} })}, "refused"},
		"no device": {helperRequest{Op: "open"}, "no device"},
		"op":        {helperRequest{Op: "exec"}, "unknown request"},
		"env":       {helperRequest{Op: "script", Reason: ReasonConnect, Env: []string{"LD_PRELOAD=/tmp/x.so"}}, "not allowed"},
		"reason":    {helperRequest{Op: "script", Reason: "shell"}, "unknown script reason"},
	} {
		rep := h.handle(tc.req)
		if !strings.Contains(rep.Err, tc.want) || rep.fd >= 0 {
			t.Errorf("%s: reply %+v, want an error containing %q and no descriptor", name, rep, tc.want)
		}
	}
	if rep := h.handle(helperRequest{Op: "script", Reason: ReasonConnect, Env: []string{"USERNAME=alice"}}); rep.Err != "" {
		t.Errorf("allowed script: %v", rep.Err)
	}
}

func with(d tun.DeviceRequest, f func(*tun.DeviceRequest)) *tun.DeviceRequest {
	f(&d)
	return &d
}
