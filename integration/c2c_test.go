package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNetstackClientToClientAndScripts: in netstack mode (server unprivileged, clients on real TUNs in their
// own namespaces) two clients reach each other through the server's switch; a user whose per-user file says
// client_to_client = false can neither reach nor be reached (TCP is reset); the connect and disconnect scripts
// ran unprivileged with DEVICE empty.
func TestNetstackClientToClientAndScripts(t *testing.T) {
	t.Parallel()
	perUser := tempDir(t)
	if err := os.WriteFile(filepath.Join(perUser, "carol"), []byte("client_to_client = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, false, fmt.Sprintf("route = [\"10.77.0.0/24\", \"10.250.77.0/24\"]\nconfig_per_user = %q", perUser))
	a, b, c := r.connect(vpnUser), r.connect("bob"), r.connect("carol")
	serve := func(cl *tunClient) {
		p := cl.ns.start(nil, targetBin, "-listen", cl.ip+":8080")
		waitFor(t, 10*time.Second, "a service on "+cl.ip, func() bool {
			return strings.Contains(p.out.String(), "ready") || p.exited()
		})
	}
	serve(a)
	serve(c)
	out, code := b.ns.output(30*time.Second, "curl", "-sS", "--max-time", "20", "http://"+a.ip+":8080/hello")
	if code != 0 || !strings.Contains(out, "hello from "+a.ip) {
		t.Fatalf("bob → alice: exit %d: %s", code, out)
	}
	if !b.ping(a.ip) {
		t.Fatal("bob cannot ping alice")
	}
	// carol refuses client-to-client: her service is unreachable (reset), and she cannot reach alice.
	out, code = b.ns.output(30*time.Second, "curl", "-sS", "--max-time", "5", "http://"+c.ip+":8080/hello")
	if code == 0 {
		t.Fatalf("bob reached carol, who has client_to_client = false: %s", out)
	}
	out, code = c.ns.output(30*time.Second, "curl", "-sS", "--max-time", "5", "http://"+a.ip+":8080/hello")
	if code != 7 { // curl: "Failed to connect", within milliseconds: reset
		t.Fatalf("carol → alice: exit %d %q; want a refused connection", code, out)
	}

	env := r.scriptEnv("connect", vpnUser)
	if env["USERNAME"] != vpnUser || env["IP_REMOTE"] != a.ip || env["DEVICE"] != "" {
		t.Errorf("netstack connect script: USERNAME=%q IP_REMOTE=%q DEVICE=%q", env["USERNAME"], env["IP_REMOTE"], env["DEVICE"])
	}
	a.proc.stop(10 * time.Second)
	if env := r.scriptEnv("disconnect", vpnUser); env["STATS_BYTES_OUT"] == "" || env["REASON"] != "disconnect" {
		t.Errorf("netstack disconnect script: %v", env)
	}
}
