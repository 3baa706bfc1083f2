package integration

// Drop-in for ocserv admins: Debian's ocserv.conf imported and served, and ocserv's behaviours where ocgate used to
// differ, each checked with the stock client.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDropinImportDebian: Debian's /etc/ocserv/ocserv.conf (the installed one, else the copy in config/testdata),
// imported with `ocgate config import`, serves the stock client once the test's port, password file and the
// paths only root may write are set (the rest is the imported file as it is).
func TestDropinImportDebian(t *testing.T) {
	t.Parallel()
	src := "/etc/ocserv/ocserv.conf"
	if _, err := os.Stat(src); err != nil {
		src = "../config/testdata/debian-ocserv.conf"
	}
	dir := newServerDir(t)
	out := filepath.Join(dir, "imported.toml")
	b, err := exec.Command(ocgateBin, "config", "import", src, "-o", out).CombinedOutput()
	if err != nil {
		t.Fatalf("ocgate config import: %v\n%s", err, b)
	}
	for _, want := range []string{"carried over (30)", `set datapath = "tun" to keep ocserv's behaviour`, ": OK"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	imported, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// startServer sets listen_host, tcp_port and auth; the others write where only root may.
	drop := regexp.MustCompile(`(?m)^(tcp_port|udp_port|auth|socket_file|pid_file|run_as_user|run_as_group) = .*\n`)
	cfg := drop.ReplaceAllString(string(imported), "")
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, dir, cfg)
	c := connect(t, s, vpnUser, vpnPass)
	if !strings.HasPrefix(c.ip, "192.168.1.") {
		t.Errorf("address %s, want one of Debian's pool 192.168.1.0/24", c.ip)
	}
	// route = 10.0.0.0/8 carries the target; names resolve through the built-in DNS at 192.168.1.1.
	download(t, c, 1<<20, 17)
	if !strings.Contains(c.proc.out.String(), "X-CSTP-DNS: 192.168.1.1") {
		t.Errorf("the client was not given the built-in DNS:\n%s", c.proc.out.String())
	}
}

// TestDropinEmptyPassword: a user whose hash is empty (`user:group:`) logs in with an empty password, as with
// ocserv; a wrong password is still refused.
func TestDropinEmptyPassword(t *testing.T) {
	t.Parallel()
	for _, tun := range []bool{false, true} {
		t.Run(fmt.Sprintf("tun=%v", tun), func(t *testing.T) {
			// No bans and no per-source rate: waitLogin tries until the server has reread the password file, with
			// more connections a second than rate_limit_ms lets one address open.
			r := newRig(t, tun, "route = [\"10.77.0.0/24\"]\nmax_ban_score = 0\nrate_limit_ms = 0")
			f, err := os.OpenFile(filepath.Join(r.dir, "users.passwd"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("nopass:staff:\n")
			f.Close()
			waitLogin(t, r.s, "nopass", "")
			bad := launch(t, r.ns, r.s.pin, "nopass", "something", r.s.url())
			if code := bad.waitExit(t, 20*time.Second); code == 0 {
				t.Fatalf("a password for an empty hash was accepted:\n%s", bad.proc.out.String())
			}
			connect(t, r.s, "nopass", "")
		})
	}
}

// TestDropinMaxSameClientsCookies: with max_same_clients = 2, three cookie-only logins (--authenticate) all
// succeed; two sessions connect, the third is refused at CONNECT with ocserv's 401, and the server says why.
func TestDropinMaxSameClientsCookies(t *testing.T) {
	t.Parallel()
	for _, tun := range []bool{false, true} {
		t.Run(fmt.Sprintf("tun=%v", tun), func(t *testing.T) {
			r := newRig(t, tun, "max_same_clients = 2\nroute = [\"10.77.0.0/24\"]")
			var cookies []string
			for range 3 {
				cookies = append(cookies, authenticate(t, r.s, vpnUser, vpnPass))
			}
			connectCookie(t, r.s, cookies[0])
			connectCookie(t, r.s, cookies[1])
			c3 := launchCookie(t, r.s, cookies[2])
			if code := c3.waitExit(t, 30*time.Second); code == 0 || configuredRE.MatchString(c3.proc.out.String()) ||
				!strings.Contains(c3.proc.out.String(), "401") {
				t.Fatalf("third session: exit %d\n%s", code, c3.proc.out.String())
			}
			waitFor(t, 5*time.Second, "the server's reason", func() bool {
				return strings.Contains(r.s.stderr.String(), `max_same_clients: user \"alice\" already has 2 sessions in use`)
			})
		})
	}
}

// TestDropinTakeoverScripts: a client taking over a session with its cookie from another address runs the
// disconnect script for the old connection (its IP_REAL) and the connect script for the new one (the new
// IP_REAL), as ocserv runs them per connection; the tunnel address stays.
func TestDropinTakeoverScripts(t *testing.T) {
	t.Parallel()
	for _, tun := range []bool{false, true} {
		t.Run(fmt.Sprintf("tun=%v", tun), func(t *testing.T) {
			r := newRig(t, tun, `route = ["10.77.0.0/24"]`)
			cookie := authenticate(t, r.s, vpnUser, vpnPass)
			c1 := connectCookie(t, r.s, cookie)
			if ip := r.scriptEnv("connect", vpnUser)["IP_REAL"]; ip != "127.0.0.1" {
				t.Fatalf("first connect: IP_REAL %q", ip)
			}
			// 10.77.0.1 is another address of the server's namespace: the client's source becomes 10.77.0.1.
			c2 := launchCookieURL(t, r.s, cookie, fmt.Sprintf("https://10.77.0.1:%d/", r.s.port))
			c2.waitConfigured(t)
			if c2.ip != c1.ip {
				t.Errorf("address after the takeover %s, want %s", c2.ip, c1.ip)
			}
			if ip := r.scriptEnv("disconnect", vpnUser)["IP_REAL"]; ip != "127.0.0.1" {
				t.Errorf("disconnect for the old connection: IP_REAL %q, want 127.0.0.1", ip)
			}
			waitFor(t, 15*time.Second, "the connect script with the new IP_REAL", func() bool {
				return r.scriptEnv("connect", vpnUser)["IP_REAL"] == "10.77.0.1"
			})
		})
	}
}

// TestDropinRoutesExactly: 256 routes with dns outside them give exactly 256 split-include headers: no extra /32
// for the DNS server (ocserv pushes exactly the configured routes).
func TestDropinRoutesExactly(t *testing.T) {
	t.Parallel()
	var routes []string
	for i := range 256 {
		routes = append(routes, fmt.Sprintf("\"172.16.%d.0/24\"", i))
	}
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "dns = [\"192.0.2.53\"]\nroute = ["+strings.Join(routes, ", ")+"]")
	c := connect(t, s, vpnUser, vpnPass)
	out := c.proc.out.String()
	if n := strings.Count(out, "X-CSTP-Split-Include: "); n != 256 {
		t.Fatalf("%d split-include headers, want 256", n)
	}
	if strings.Contains(out, "192.0.2.53/255.255.255.255") {
		t.Fatalf("the DNS server got a route of its own:\n%s", out)
	}
}

// waitLogin waits until user can log in (the server rereads a changed password file at most once a second).
func waitLogin(t *testing.T, s *server, user, pass string) {
	t.Helper()
	waitFor(t, 15*time.Second, user+"'s login", func() bool {
		_, code := s.ns.output(30*time.Second, "sh", "-c", fmt.Sprintf(
			"printf '%%s\\n' %q | openconnect --protocol=anyconnect --servercert %s -u %s --passwd-on-stdin --non-inter --authenticate %s",
			pass, s.pin, user, s.url()))
		return code == 0
	})
}
