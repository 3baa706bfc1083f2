package integration

// Several instances sharing Redis (redis_url, cookie_key_file): the stock client logs in on one, reconnects with
// its cookie to the other and keeps its address; the old instance lets the session go (takeover); a logout on one
// makes the cookie unusable on the other.

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRedis runs redis-server in ns on 127.0.0.1:port (no persistence) and waits until it answers. A machine
// without redis-server fails the test (integration/test.sh installs it).
func startRedis(t *testing.T, ns *netns, port int) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is missing (integration/test.sh installs the Debian package redis-server)")
	}
	dir := tempDir(t)
	p := ns.start(nil, "redis-server", "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--save", "",
		"--appendonly", "no", "--dir", dir)
	waitFor(t, 10*time.Second, "redis-server to listen", func() bool {
		c, err := ns.dial(fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil || p.exited()
	})
	if p.exited() {
		t.Fatalf("redis-server exited: %s", p.out.String())
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
}

// writeCookieKeys writes a cookie key file readable by the servers into each dir and returns its name.
func writeCookieKeys(t *testing.T, dirs ...string) string {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	line := base64.StdEncoding.EncodeToString(k) + "\n"
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cookie.keys"), []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		chownAll(t, d)
	}
	return "cookie.keys"
}

// startPair starts a namespace with the test targets and a redis-server, and two instances sharing it: a on
// 127.0.0.1 and b on 127.0.0.2 (port 8443 both), each with common and its own configuration lines.
func startPair(t *testing.T, common, confA, confB string) (ns *netns, a, b *server) {
	t.Helper()
	ns = newNetns(t)
	ns.startTarget()
	redisURL := startRedis(t, ns, 6379)
	dirA, dirB := newServerDir(t), newServerDir(t)
	keys := writeCookieKeys(t, dirA, dirB)
	common = fmt.Sprintf("redis_url = %q\ncookie_key_file = %q\n", redisURL, keys) + common
	a = startServer(t, ns, dirA, common+"instance_id = \"a\"\n"+confA)
	b = startServerAs(t, ns, dirB, common+"instance_id = \"b\"\nlisten_host = \"127.0.0.2\"\n"+confB, false, "127.0.0.2")
	return ns, a, b
}

func TestClusterRoamKeepsAddress(t *testing.T) {
	_, a, b := startPair(t, "", "", "")

	cookie := authenticate(t, a, vpnUser, vpnPass)
	c1 := connectCookie(t, a, cookie)
	if out, code := c1.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("through instance a: exit %d, %q", code, out)
	}

	// The same cookie on instance b (the balancer sent the client elsewhere): same address, and a lets go.
	c2 := connectCookie(t, b, cookie)
	if c2.ip != c1.ip {
		t.Fatalf("roamed to instance b with address %s; it had %s on a", c2.ip, c1.ip)
	}
	waitFor(t, 10*time.Second, "instance a to let the session go", func() bool {
		return strings.Contains(a.stderr.String(), "taken over by instance b")
	})
	if out, code := c2.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("through instance b: exit %d, %q", code, out)
	}
	if !strings.Contains(b.stderr.String(), "session roamed here") {
		t.Errorf("instance b did not log the roam:\n%s", b.stderr.String())
	}
	c1.proc.stop(5 * time.Second)

	// Instance b, the owner now, dies; the client comes back to a with the cookie and still has its address.
	b.proc.cmd.Process.Kill()
	<-b.proc.done
	c2.proc.stop(5 * time.Second)
	c3 := connectCookie(t, a, cookie)
	if c3.ip != c1.ip {
		t.Fatalf("back on instance a with address %s; it had %s", c3.ip, c1.ip)
	}
	if out, code := c3.curl("--fail", "http://target.test:8080/hello"); code != 0 {
		t.Fatalf("through instance a after b died: exit %d, %q", code, out)
	}

	// A logout (openconnect's SIGINT: BYE and logout) on a revokes the cookie everywhere: b, restarted, refuses it.
	c3.proc.cmd.Process.Signal(os.Interrupt)
	c3.waitExit(t, 15*time.Second)
	waitFor(t, 10*time.Second, "instance a to end the session", func() bool {
		return strings.Contains(a.stderr.String(), "user logged out")
	})
	b.start("-c", filepath.Join(b.dir, "ocgate.toml"), "--state-dir", b.stateDir, "--log-level", "debug")
	c4 := launchCookie(t, b, cookie)
	if code := c4.waitExit(t, 30*time.Second); code == 0 {
		t.Fatalf("a logged-out cookie was accepted by another instance:\n%s", c4.proc.out.String())
	}
	waitFor(t, 10*time.Second, "instance b to refuse the revoked cookie", func() bool {
		return strings.Contains(b.stderr.String(), "logged out, terminated or expired")
	})
}

// TestClusterDegradedAndBans: with Redis stopped, a live session keeps moving bytes; a new login is refused on
// the instance with redis_unavailable = "refuse" (its status says degraded) and served on the one with "local";
// when Redis returns, both publish their sessions again, and of two sessions given the same address the newer
// ends. Then wrong passwords on instance a ban the address on instance b.
func TestClusterDegradedAndBans(t *testing.T) {
	ns, a, b := startPair(t, "max_ban_score = 20\nban_points_wrong_password = 10\nban_time = 600\nrate_limit_ms = 0\n",
		"", "redis_unavailable = \"local\"\n")
	c := connect(t, a, vpnUser, vpnPass)

	// This namespace's redis-server only, by its address (pgrep would name every redis-server of the machine).
	ns.output(10*time.Second, "redis-cli", "-p", "6379", "shutdown", "nosave")
	waitFor(t, 10*time.Second, "redis-server to exit", func() bool {
		conn, err := ns.dial("127.0.0.1:6379")
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	download(t, c, 4<<20, 64) // the live session does not need Redis
	if out, code := ns.output(30*time.Second, "sh", "-c", fmt.Sprintf(
		"printf '%%s\\n' %q | openconnect --protocol=anyconnect --servercert %s -u %s --passwd-on-stdin --non-inter --authenticate %s",
		vpnPass, a.pin, vpnUser, a.url())); code == 0 || !strings.Contains(out, "degraded") {
		t.Fatalf("a new login on the refusing instance without Redis: exit %d\n%s", code, out)
	}
	out, _, code := a.ctl("--json", "show", "status")
	if code != 0 || !strings.Contains(out, `"Shared state": "degraded"`) {
		t.Fatalf("show status without Redis: exit %d\n%s", code, out)
	}
	// redis_unavailable = "local": b serves the login alone, and, not seeing a's leases, gives the same address.
	cb := connect(t, b, vpnUser, vpnPass)
	waitFor(t, 5*time.Second, "instance b to log its local login", func() bool {
		return strings.Contains(b.stderr.String(), "redis_unavailable = local")
	})

	// Redis returns, empty: both instances publish their sessions again; if they share an address, the newer
	// session (b's) ends and a's keeps it.
	startRedis(t, ns, 6379)
	if cb.ip == c.ip {
		waitFor(t, 40*time.Second, "instance b to end its newer session holding a's address", func() bool {
			return strings.Contains(b.stderr.String(), "ending the local session")
		})
		cb.waitExit(t, 30*time.Second)
	} else {
		download(t, cb, 1<<20, 64)
	}
	waitFor(t, 40*time.Second, "a's session to be in Redis again", func() bool {
		out, _, _ := a.ctl("--json", "show", "users", "--all-instances")
		return strings.Contains(out, `"Instance": "a"`) && strings.Contains(out, c.ip)
	})
	download(t, c, 1<<20, 64)

	for range 2 {
		w := launch(t, ns, a.pin, vpnUser, "wrong", a.url())
		w.waitExit(t, 20*time.Second)
	}
	waitFor(t, 5*time.Second, "the ban on a", func() bool { return strings.Contains(a.stderr.String(), `msg="address banned"`) })
	if out, code := ns.output(30*time.Second, "sh", "-c", fmt.Sprintf(
		"printf '%%s\\n' %q | openconnect --protocol=anyconnect --servercert %s -u %s --passwd-on-stdin --non-inter --authenticate %s",
		vpnPass, b.pin, vpnUser, b.url())); code == 0 {
		t.Fatalf("an address banned on instance a logged in on instance b:\n%s", out)
	}
}

// TestClusterLoginRates measures logins (login and CONNECT) with and without shared state, alternating the two
// servers in one run, and the Redis commands per login (INFO commandstats before and after). A measurement:
// OCGATE_BENCH_LOGINS=N runs N logins per round.
func TestClusterLoginRates(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("OCGATE_BENCH_LOGINS"))
	if n <= 0 {
		t.Skip("a measurement: OCGATE_BENCH_LOGINS=N runs N logins per round")
	}
	lg := buildLoadgen(t)
	ns := newNetns(t)
	redisURL := startRedis(t, ns, 6379)
	common := "max_clients = 100000\nmax_same_clients = 0\nrate_limit_ms = 0\nmax_ban_score = 0\n" +
		"ipv4_network = \"10.250.0.0/16\"\nmax_unauth_per_ip = 0\nauth = [\"plain[passwd=bench.passwd]\"]\n"
	servers := map[string]*server{}
	for _, v := range []struct{ name, conf, host string }{
		{"local", "", "127.0.0.1"},
		{"redis", fmt.Sprintf("redis_url = %q\ncookie_key_file = \"cookie.keys\"\n", redisURL), "127.0.0.2"},
	} {
		dir := newServerDir(t)
		benchUsers(t, dir, 4*n, "00")
		writeCookieKeys(t, dir)
		servers[v.name] = startServerAs(t, ns, dir, common+v.conf+fmt.Sprintf("listen_host = %q\n", v.host), false, v.host)
	}
	byCmd := map[string]int{}
	calls := func() int {
		out, _ := ns.output(10*time.Second, "redis-cli", "-p", "6379", "INFO", "commandstats")
		total := 0
		for _, l := range strings.Split(out, "\n") {
			if name, rest, ok := strings.Cut(l, ":calls="); ok {
				v, _, _ := strings.Cut(rest, ",")
				c, _ := strconv.Atoi(v)
				total += c
				byCmd[strings.TrimPrefix(name, "cmdstat_")] = c
			}
		}
		return total
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-6s %-6s %10s %12s %14s\n", "round", "state", "logins/s", "auth p50 ms", "redis cmds/login")
	for round := range 2 {
		for _, name := range []string{"local", "redis"} {
			s := servers[name]
			before := calls()
			user := "u%d"
			if round == 1 {
				user = "v%d"
			}
			r := runLogins(t, lg, s, name, user, n, 16, "--password", vpnPass)
			per := "-"
			if name == "redis" {
				per = fmt.Sprintf("%.1f", float64(calls()-before-1)/float64(n)) // -1: the INFO itself
			}
			fmt.Fprintf(&table, "%-6d %-6s %10.0f %12.2f %14s\n", round, name, r.PerSecond,
				r.Stages["auth"].P50-r.Stages["tls"].P50, per)
		}
	}
	t.Logf("%d logins per round, 16 in parallel, servers alternating (auth: TLS end to cookie):\n%s"+
		"Redis commands in all (renewal included): %v", n, table.String(), byCmd)
}
