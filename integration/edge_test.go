package integration

// The edge end to end (protocol/edge.go): the stock client through HAProxy (lb_harness_test.go), in front of
// instances that take the client's address from a PROXY v2 header, or behind HAProxy terminating TLS.

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEdgeProxyV2RealAddress: through HAProxy in TCP mode with send-proxy-v2, the instance holding the session logs
// the client's address (10.59.0.2), not HAProxy's (10.60.0.254), and so does `ctl show users`; traffic flows.
func TestEdgeProxyV2RealAddress(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	cl := c.lbClient()
	if out, code := cl.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("curl through the tunnel: exit %d\n%s", code, out)
	}
	in := c.holder(cl.ip)
	if in == nil {
		t.Fatalf("no instance logged the session of %s", cl.ip)
	}
	in.waitLog(`"auth success" user=`+vpnUser+` remote=`+regexp.QuoteMeta(lbClientAddr)+`:\d+`, 5*time.Second)
	if strings.Contains(in.log(), "remote="+lbSource) {
		t.Errorf("the instance logged HAProxy's address %s as a client's:\n%s", lbSource, in.log())
	}
	us := in.users(t)
	if len(us) != 1 || us[0].RemoteIP != lbClientAddr {
		t.Fatalf("ctl show users: want one user from %s, got %+v", lbClientAddr, us)
	}
}
