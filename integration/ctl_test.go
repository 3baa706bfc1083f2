package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ocgate/integration/internal/stream"
)

// occtlUser is an element of occtl's `show users` JSON, with occtl's key names and types.
type occtlUser struct {
	ID          int64    `json:"ID"`
	Username    string   `json:"Username"`
	State       string   `json:"State"`
	MTU         string   `json:"MTU"`
	RemoteIP    string   `json:"Remote IP"`
	IPv4        string   `json:"IPv4"`
	PtPIPv4     string   `json:"P-t-P IPv4"`
	UserAgent   string   `json:"User-Agent"`
	RX          string   `json:"RX"`
	TX          string   `json:"TX"`
	DPD         string   `json:"DPD"`
	RawConnAt   int64    `json:"raw_connected_at"`
	Session     string   `json:"Session"`
	FullSession string   `json:"Full session"`
	TLSCipher   string   `json:"TLS ciphersuite"`
	Routes      []string `json:"Routes"`
	Datapath    string   `json:"Datapath"`
	Channel     string   `json:"Channel"`
}

// occtlStatus is part of occtl's `show status` JSON.
type occtlStatus struct {
	Status         string `json:"Status"`
	ServerPID      int    `json:"Server PID"`
	Active         int    `json:"Active sessions"`
	AuthFailures   int    `json:"Total authentication failures"`
	BannedIPs      int    `json:"IPs in ban list"`
	RawUpSince     int64  `json:"raw_up_since"`
	Uptime         int64  `json:"uptime"`
	RawRX          uint64 `json:"raw_rx"`
	RawTX          uint64 `json:"raw_tx"`
	SessionsClosed int    `json:"Sessions handled"`
	MaxMTU         int    `json:"Max MTU"`
}

func (s *server) socket() string { return filepath.Join(s.stateDir, "ocgate.socket") }

// ctl runs `ocgate ctl -s SOCKET args...` (as root) and returns its stdout, stderr and exit code.
func (s *server) ctl(args ...string) (string, string, int) {
	return runCtl(ocgateBin, append([]string{"ctl", "-s", s.socket()}, args...)...)
}

func runCtl(bin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// users runs `ctl --json show users` and decodes it.
func (s *server) users(t *testing.T) []occtlUser {
	t.Helper()
	out, stderr, code := s.ctl("--json", "show", "users")
	var us []occtlUser
	if code != 0 || json.Unmarshal([]byte(out), &us) != nil {
		t.Fatalf("ctl --json show users: exit %d\n%s%s", code, out, stderr)
	}
	return us
}

// metric returns the value of the sample line starting with name (e.g. `ocgate_bytes_total{direction="tx"}`).
func metric(t *testing.T, ns *netns, name string) float64 {
	t.Helper()
	out, code := ns.output(10*time.Second, "curl", "-sS", "--fail", "http://127.0.0.1:9617/metrics")
	if code != 0 {
		t.Fatalf("GET /metrics: exit %d %s", code, out)
	}
	for _, l := range readLines(out) {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", name, out)
	return 0
}

// TestCtlShowAndMetrics: with a session up that moved 4 MiB, `ctl show users` lists it (human and occtl's JSON,
// RX/TX as decimal strings of at least the bytes moved), `occtl` (a symlink) prints the same, `show status` counts
// it, and /metrics shows the bytes and the failed login that came first.
func TestCtlShowAndMetrics(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "metrics_listen = \"127.0.0.1:9617\"\nroute = [\"10.77.0.0/24\"]")
	bad := launch(t, ns, s.pin, vpnUser, "wrong", s.url())
	bad.waitExit(t, 20*time.Second)
	c := connect(t, s, vpnUser, vpnPass)
	download(t, c, 4<<20, 61)

	us := s.users(t)
	if len(us) != 1 {
		t.Fatalf("show users: %+v", us)
	}
	u := us[0]
	rx, errRX := strconv.ParseUint(u.RX, 10, 64)
	tx, errTX := strconv.ParseUint(u.TX, 10, 64)
	if errRX != nil || errTX != nil || tx < 4<<20 || rx == 0 || u.Username != vpnUser || u.IPv4 != c.ip ||
		u.State != "connected" || u.RemoteIP != "127.0.0.1" || u.MTU == "" || u.DPD != "90" || u.Datapath != "netstack" ||
		len(u.Session) != 6 || !strings.HasPrefix(u.FullSession, u.Session) || !strings.Contains(u.TLSCipher, "TLS") ||
		len(u.Routes) != 1 || u.Routes[0] != "10.77.0.0/255.255.255.0" || u.RawConnAt == 0 {
		t.Fatalf("show users: %+v", u)
	}
	human, _, code := s.ctl("show", "users")
	lines := readLines(human)
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[0], "vpn-ip") ||
		!regexp.MustCompile(fmt.Sprintf(`^\s*%d\s+alice\s+default\s+127\.0\.0\.1\s+%s\s`, u.ID, regexp.QuoteMeta(c.ip))).MatchString(lines[1]) {
		t.Fatalf("show users: exit %d\n%s", code, human)
	}

	t.Run("occtl symlink", func(t *testing.T) {
		link := filepath.Join(tempDir(t), "occtl")
		if err := os.Symlink(ocgateBin, link); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := runCtl(link, "-s", s.socket(), "-n", "show", "users")
		if code != 0 || readLines(out)[0] != lines[0] || !strings.HasPrefix(strings.TrimSpace(readLines(out)[1]), fmt.Sprint(u.ID)) {
			t.Fatalf("occtl show users: exit %d\n%s%s\nocgate ctl printed:\n%s", code, out, stderr, human)
		}
		jout, _, code := runCtl(link, "-s", s.socket(), "--json", "show", "users")
		var ous []occtlUser
		if code != 0 || json.Unmarshal([]byte(jout), &ous) != nil || len(ous) != 1 || ous[0].ID != u.ID || ous[0].FullSession != u.FullSession {
			t.Fatalf("occtl --json show users: exit %d\n%s", code, jout)
		}
		if _, stderr, code := runCtl(link, "show", "nonsense"); code != 2 || !strings.Contains(stderr, "usage:") {
			t.Fatalf("unknown command: exit %d\n%s", code, stderr)
		}
	})

	t.Run("show status", func(t *testing.T) {
		out, _, code := s.ctl("--json", "show", "status")
		var st occtlStatus
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Status != "online" || st.Active != 1 ||
			st.AuthFailures != 1 || st.RawTX < 4<<20 || st.ServerPID == 0 || st.RawUpSince == 0 || st.MaxMTU == 0 {
			t.Fatalf("show status: exit %d\n%s", code, out)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		if v := metric(t, ns, `ocgate_bytes_total{direction="tx"}`); v < 4<<20 {
			t.Fatalf("tx bytes %v", v)
		}
		if v := metric(t, ns, `ocgate_auth_total{method="password",result="failure"}`); v != 1 {
			t.Fatalf("auth failures %v", v)
		}
		if v := metric(t, ns, `ocgate_sessions{channel="dtls",datapath="netstack"}`) + metric(t, ns, `ocgate_sessions{channel="tls",datapath="netstack"}`); v != 1 {
			t.Fatalf("sessions %v", v)
		}
		before := metric(t, ns, `ocgate_bytes_total{direction="tx"}`)
		download(t, c, 1<<20, 62)
		if v := metric(t, ns, `ocgate_bytes_total{direction="tx"}`); v < before+1<<20 {
			t.Fatalf("tx bytes did not move: %v then %v", before, v)
		}
		if out, code := ns.output(10*time.Second, "curl", "-sS", "--fail", "http://127.0.0.1:9617/healthz"); code != 0 {
			t.Fatalf("healthz: %d %s", code, out)
		}
	})
}

// TestCtlDisconnectAndTerminate: `disconnect id` closes the tunnel and the client comes back with its cookie;
// `terminate user` ends the session and the cookie is refused afterwards.
func TestCtlDisconnectAndTerminate(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "")
	cookie := authenticate(t, s, vpnUser, vpnPass)
	c := connectCookie(t, s, cookie)
	id := s.users(t)[0].ID
	if out, stderr, code := s.ctl("disconnect", "id", fmt.Sprint(id)); code != 0 {
		t.Fatalf("disconnect id: exit %d %s%s", code, out, stderr)
	}
	waitFor(t, 10*time.Second, "the tunnel to close", func() bool {
		return strings.Contains(s.stderr.String(), `reason="disconnected by the administrator"`)
	})
	waitFor(t, 30*time.Second, "the client to reconnect with its cookie", func() bool {
		return strings.Count(s.stderr.String(), `msg="session connected" id=`+fmt.Sprint(id)) >= 2 || c.proc.exited()
	})
	if c.proc.exited() {
		t.Fatalf("the client exited instead of reconnecting:\n%s", c.proc.out.String())
	}
	if us := s.users(t); len(us) != 1 || us[0].ID != id || us[0].IPv4 != c.ip {
		t.Fatalf("after the reconnect: %+v", us)
	}
	download(t, c, 1<<20, 63)

	if out, stderr, code := s.ctl("terminate", "user", vpnUser); code != 0 || !strings.Contains(out, "terminated") {
		t.Fatalf("terminate user: exit %d %s%s", code, out, stderr)
	}
	c.waitExit(t, 20*time.Second)
	again := launchCookie(t, s, cookie)
	if code := again.waitExit(t, 20*time.Second); code != 2 || !strings.Contains(again.proc.out.String(), "Cookie was rejected by server") {
		t.Fatalf("cookie after terminate: exit %d\n%s", code, again.proc.out.String())
	}
	if _, _, code := s.ctl("terminate", "user", vpnUser); code != 1 {
		t.Fatalf("terminating a user without sessions: exit %d, want 1", code)
	}
}

// TestCtlUnbanIP: wrong passwords get 127.0.0.1 banned; `show ip bans` lists it, `unban ip` lifts the ban at
// once (ban_time is long) and the user connects.
func TestCtlUnbanIP(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "max_ban_score = 20\nban_points_wrong_password = 10\nban_time = 600\nrate_limit_ms = 0")
	for range 2 {
		c := launch(t, ns, s.pin, vpnUser, "wrong", s.url())
		c.waitExit(t, 20*time.Second)
	}
	waitFor(t, 5*time.Second, "the ban", func() bool { return strings.Contains(s.stderr.String(), `msg="address banned"`) })
	out, _, code := s.ctl("--json", "show", "ip", "bans")
	var bans []struct {
		IP    string `json:"IP"`
		Score int    `json:"Score"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &bans) != nil || len(bans) != 1 || bans[0].IP != "127.0.0.1" {
		t.Fatalf("show ip bans: exit %d\n%s", code, out)
	}
	if out, stderr, code := s.ctl("unban", "ip", "127.0.0.1"); code != 0 {
		t.Fatalf("unban ip: exit %d %s%s", code, out, stderr)
	}
	c := connect(t, s, vpnUser, vpnPass)
	download(t, c, 1<<20, 64)
}

// TestCtlReload: a route added by a reload reaches the next session while the first keeps its routes and its
// 64 MiB download completes with the right hash; then a broken configuration is refused with its line and the
// server keeps serving with the old one.
func TestCtlReload(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	dir := newServerDir(t)
	s := startServer(t, ns, dir, "route = [\"10.77.0.0/24\"]\nmax_same_clients = 0")
	c1 := connect(t, s, vpnUser, vpnPass)
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() { // checked below: t.Fatal belongs to the test's goroutine
		out, code := ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
			"curl -sS --fail --max-time 100 --socks5-hostname 127.0.0.1:%d 'http://10.77.0.1:8080/bytes?n=%d&seed=65' | sha256sum",
			c1.socksPort, 64<<20))
		done <- result{out, code}
	}()
	cfgPath := filepath.Join(dir, "ocgate.toml")
	orig, _ := os.ReadFile(cfgPath)
	changed := strings.Replace(string(orig), `route = ["10.77.0.0/24"]`, `route = ["10.77.0.0/24", "10.88.0.0/24"]`, 1)
	if err := os.WriteFile(cfgPath, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := s.ctl("reload")
	if code != 0 || !strings.Contains(out, "route (applies to new sessions)") {
		t.Fatalf("reload: exit %d\n%s%s", code, out, stderr)
	}
	c2 := connect(t, s, vpnUser, vpnPass)
	if out, code := c2.curl("--fail", "http://10.88.0.1:8080/hello"); code != 0 || !strings.Contains(out, "10.88.0.1") {
		t.Fatalf("the new route through the second session: exit %d %q", code, out)
	}
	for _, u := range s.users(t) {
		want := 1
		if u.IPv4 == c2.ip {
			want = 2
		}
		if len(u.Routes) != want {
			t.Fatalf("session %s routes %v, want %d", u.IPv4, u.Routes, want)
		}
	}
	if r := <-done; r.code != 0 || !strings.HasPrefix(r.out, stream.SHA256(64<<20, 65)) {
		t.Fatalf("the first session's 64 MiB download across the reload: exit %d, %q", r.code, r.out)
	}

	broken := changed + "route_typo = 1\ndpd = \"soon\"\n"
	if err := os.WriteFile(cfgPath, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = s.ctl("reload")
	if code != 1 || !regexp.MustCompile(`ocgate\.toml:\d+: dpd`).MatchString(stderr) {
		t.Fatalf("broken reload: exit %d\n%s%s", code, out, stderr)
	}
	s.proc.cmd.Process.Signal(syscall.SIGHUP) // the same, by signal: refused and logged
	waitFor(t, 10*time.Second, "the refused SIGHUP reload in the log", func() bool {
		return strings.Contains(s.stderr.String(), "reload refused")
	})
	c3 := connect(t, s, vpnUser, vpnPass)
	download(t, c3, 1<<20, 66)
	if out, code := c3.curl("--fail", "http://10.88.0.1:8080/hello"); code != 0 {
		t.Fatalf("the reloaded route is gone after a refused reload: exit %d %q", code, out)
	}
}

// TestReadyzDrain: on SIGTERM with server_drain_ms, /readyz says not ready while the server still answers.
func TestReadyzDrain(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "metrics_listen = \"127.0.0.1:9617\"\nserver_drain_ms = 3000")
	readyz := func() string {
		out, _ := ns.output(10*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9617/readyz")
		return out
	}
	if got := readyz(); got != "200" {
		t.Fatalf("readyz before SIGTERM: %s", got)
	}
	s.proc.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "readyz to say not ready", func() bool { return readyz() == "503" })
	if s.proc.exited() {
		t.Fatal("the server exited before its drain time")
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestCtlSocketRefusesOtherUID: another uid can neither open the socket (mode 0600) nor, when the file mode would
// let it, get past the server's SO_PEERCRED check.
func TestCtlSocketRefusesOtherUID(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "")
	other := []string{"--reuid=1234", "--regid=1234", "--clear-groups", ocgateBin, "ctl", "-s", s.socket(), "show", "status"}
	fi, err := os.Stat(s.socket())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi, err)
	}
	if out, stderr, code := runCtl("setpriv", other...); code != 1 || !strings.Contains(stderr, "permission denied") {
		t.Fatalf("another uid: exit %d %s%s", code, out, stderr)
	}
	os.Chmod(s.stateDir, 0o711)
	os.Chmod(s.socket(), 0o666)
	out, stderr, code := runCtl("setpriv", other...)
	if code != 1 || !strings.Contains(stderr, "permission denied: uid 1234") {
		t.Fatalf("another uid past the file mode: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, code := s.ctl("show", "status"); code != 0 || !strings.Contains(out, "Status: online") {
		t.Fatalf("root: exit %d %s", code, out)
	}
}
