package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ocgate/netstack"
)

// TestDNSFeaturesAndFlowLog: split_dns and tunnel_all_dns reach the client (it logs the CONNECT headers); the
// built-in resolver never hands a user an address the user may not reach: unrouted.test (10.88.0.1, outside the
// routes) and denied.test (10.77.0.2, in egress_deny) do not resolve through the tunnel, target.test does; the
// flow log has a line for the flow that ended (with its bytes) and for one that was refused.
func TestDNSFeaturesAndFlowLog(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]
egress_deny = ["10.77.0.2/32"]
split_dns = ["corp.test", "Lab.Test."]
tunnel_all_dns = true
flow_log = "flows.jsonl"`)
	c := connect(t, s, vpnUser, vpnPass)
	out := c.proc.out.String()
	for _, h := range []string{"X-CSTP-Split-DNS: corp.test", "X-CSTP-Split-DNS: lab.test", "X-CSTP-Tunnel-All-DNS: true"} {
		if !strings.Contains(out, h) {
			t.Errorf("the client did not receive %q:\n%s", h, out)
		}
	}
	if o, code := c.curl("--fail", "http://target.test:8080/hello"); code != 0 || !strings.Contains(o, "hello from 10.77.0.1") {
		t.Fatalf("target.test: exit %d %q", code, o)
	}
	for _, name := range []string{"unrouted.test", "denied.test"} {
		// ocproxy resolves through the tunnel; a name without an address fails before any connection.
		if o, code := c.curl("http://" + name + ":8080/hello"); code != 97 && code != 6 {
			t.Errorf("%s: exit %d %q, want a resolution failure", name, code, o)
		}
	}
	if _, code := c.curl("--max-time", "5", "http://10.88.0.1:8080/hello"); code == 0 {
		t.Fatal("10.88.0.1 (outside the routes) answered")
	}
	var ended, refused *netstack.FlowRecord
	waitFor(t, 10*time.Second, "the flow log lines", func() bool {
		b, _ := os.ReadFile(filepath.Join(s.dir, "flows.jsonl"))
		for _, l := range readLines(string(b)) {
			var r netstack.FlowRecord
			if json.Unmarshal([]byte(l), &r) != nil {
				t.Fatalf("flow log line is not JSON: %q", l)
			}
			switch {
			case r.Dst == "10.77.0.1:8080" && r.Verdict == "ended":
				ended = &r
			case r.Dst == "10.88.0.1:8080" && r.Verdict == "refused":
				refused = &r
			}
		}
		return ended != nil && refused != nil
	})
	if ended.User != vpnUser || ended.Proto != "tcp" || ended.BytesDown < 20 || ended.BytesUp < 20 || !strings.HasPrefix(ended.Src, c.ip+":") {
		t.Errorf("ended flow: %+v", *ended)
	}
	if !strings.Contains(refused.Reason, "routes") {
		t.Errorf("refused flow: %+v", *refused)
	}
}
