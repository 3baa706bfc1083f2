package integration

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ocgate/integration/internal/stream"
)

var (
	hooksOnce sync.Once
	hooksBin  string
	hooksErr  error
)

// hooksBinary builds ocgate with -tags testhooks once: SIGUSR2 makes its network process send a malformed request
// to the security module, try execve and try to read the generated key, and log each result.
func hooksBinary(t *testing.T) string {
	t.Helper()
	hooksOnce.Do(func() {
		hooksBin = filepath.Join(binDir, "ocgate-hooks")
		cmd := exec.Command("go", "build", "-tags", "testhooks", "-o", hooksBin, "./cmd/ocgate")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			hooksErr = fmt.Errorf("go build -tags testhooks: %v\n%s", err, out)
		}
	})
	if hooksErr != nil {
		t.Fatal(hooksErr)
	}
	return hooksBin
}

// startHooksServer is startServerAs with the test-hooks binary.
func startHooksServer(t *testing.T, ns *netns, dir, config string, root bool) *server {
	t.Helper()
	cfg := fmt.Sprintf("listen_host = \"127.0.0.1\"\ntcp_port = 8443\nauth = [\"plain[passwd=users.passwd]\"]\n%s\n", publishTargets(config))
	cfgPath := filepath.Join(dir, "ocgate.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, ns: ns, dir: dir, stateDir: filepath.Join(dir, "state"), port: 8443, root: root, bin: hooksBinary(t)}
	os.MkdirAll(s.stateDir, 0o700)
	chownAll(t, dir)
	if root { // the password file as an administrator leaves it: root's, 0600
		os.Chown(filepath.Join(dir, "users.passwd"), 0, 0)
		os.Chmod(filepath.Join(dir, "users.passwd"), 0o600)
	}
	s.start("-c", cfgPath, "--state-dir", s.stateDir, "--log-level", "debug")
	return s
}

// children returns the PIDs whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
	}
	return out
}

// moduleWorker returns the PIDs of the security module's monitor and its current worker.
func moduleWorker(t *testing.T, networkPID int) (monitor, worker int) {
	t.Helper()
	waitFor(t, 10*time.Second, "the security module's monitor and worker", func() bool {
		monitor, worker = 0, 0
		for _, c := range children(networkPID) {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); bytes.Contains(cmd, []byte("__security-module-monitor")) {
				monitor = c
				if w := children(c); len(w) == 1 {
					worker = w[0]
				}
			}
		}
		return worker != 0
	})
	return monitor, worker
}

// memoryHolds reports whether the readable mappings of process pid contain needle.
func memoryHolds(t *testing.T, pid int, needle []byte) bool {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	buf := make([]byte, 1<<20+len(needle))
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' || strings.Contains(sc.Text(), "[vvar") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &start, &end); err != nil {
			continue
		}
		for off := start; off < end; off += 1 << 20 {
			n := min(uint64(len(buf)), end-off)
			m, _ := mem.ReadAt(buf[:n], int64(off))
			if bytes.Contains(buf[:m], needle) {
				return true
			}
		}
	}
	return false
}

// ecdsaD returns the private scalar of the PEM ECDSA key at path (read as root).
func ecdsaD(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.(*ecdsa.PrivateKey).Bytes() // the private scalar, fixed length
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkNoSecrets: the network process's descriptors point to neither file and its memory holds no byte string of
// the key's private scalar, which the worker's memory does hold (the scan can find it).
func checkNoSecrets(t *testing.T, s *server, passwd string) {
	t.Helper()
	pid := s.proc.cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "ocgate-hooks" {
		t.Fatalf("process %d is %q, want the server", pid, comm)
	}
	keyPath := filepath.Join(s.stateDir, "server-key.pem")
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if target == keyPath || target == passwd {
			t.Errorf("the network process holds descriptor %s to %s", fd.Name(), target)
		}
	}
	d := ecdsaD(t, keyPath)
	if memoryHolds(t, pid, d) {
		t.Errorf("the network process's memory holds the private key")
	}
	_, worker := moduleWorker(t, pid)
	if !memoryHolds(t, worker, d) {
		t.Errorf("the scan did not find the key in the security module's memory either: it proves nothing")
	}
}

// TestPrivsepRoot: started as root with run_as_user and sec_mod_user, the server keeps the key and the password
// file (root's, 0600) in the security module: the stock client logs in and moves data; the network process's user
// cannot open either file, and the process holds neither a descriptor to them nor the key's bytes; a malformed RPC
// is refused and logged; killing the module's worker mid-download keeps the download going, the next login works
// after the restart; killing the network process takes the module down with it.
func TestPrivsepRoot(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	dir := newServerDir(t)
	s := startHooksServer(t, ns, dir, "route = [\"10.77.0.0/24\"]\nrun_as_user = \"nobody\"\nsec_mod_user = \"daemon\"\nmax_same_clients = 0", true)
	c := connect(t, s, vpnUser, vpnPass)
	download(t, c, 1<<20, 3)

	passwd := filepath.Join(dir, "users.passwd")
	for _, f := range []string{filepath.Join(s.stateDir, "server-key.pem"), passwd} {
		out, err := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", unprivUID), fmt.Sprintf("--regid=%d", unprivUID),
			"--clear-groups", "cat", f).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Errorf("as uid %d, cat %s: %v %q, want permission denied", unprivUID, f, err, out)
		}
	}
	pid := s.proc.cmd.Process.Pid
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); !strings.Contains(string(st), fmt.Sprintf("Uid:\t%d\t", unprivUID)) {
		t.Errorf("the network process does not run as uid %d:\n%s", unprivUID, st)
	}
	checkNoSecrets(t, s, passwd)

	s.proc.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, 10*time.Second, "the malformed request to be refused and logged", func() bool {
		return strings.Contains(s.stderr.String(), "security module: refused a malformed request")
	})

	// Kill the worker during a 32 MiB download.
	monitor, worker := moduleWorker(t, pid)
	done := make(chan string, 1)
	go func() {
		out, _ := c.ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
			"curl -sS --fail --max-time 100 --socks5-hostname 127.0.0.1:%d 'http://10.77.0.1:8080/bytes?n=%d&seed=5' | sha256sum",
			c.socksPort, 32<<20))
		done <- out
	}()
	syscall.Kill(worker, syscall.SIGKILL)
	if out := <-done; !strings.HasPrefix(out, stream.SHA256(32<<20, 5)) {
		t.Fatalf("the download across the module's restart: %q", out)
	}
	waitFor(t, 20*time.Second, "the worker's restart", func() bool {
		return strings.Contains(s.stderr.String(), "security module worker (re)started")
	})
	c2 := connect(t, s, vpnUser, vpnPass)
	download(t, c2, 1<<20, 4)

	// The network process dies: the monitor and the worker follow (no orphans).
	_, worker = moduleWorker(t, pid)
	s.proc.cmd.Process.Kill()
	waitFor(t, 10*time.Second, "the security module to exit with the server", func() bool {
		return syscall.Kill(monitor, 0) != nil && syscall.Kill(worker, 0) != nil
	})
}

// TestPrivsepIsolated: started unprivileged with isolate_workers, the server still logs in through the module,
// and its network process can neither execute a program nor read the key file it owns; the module restarts after
// being killed and the next login works.
func TestPrivsepIsolated(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	dir := newServerDir(t)
	s := startHooksServer(t, ns, dir, "route = [\"10.77.0.0/24\"]\nisolate_workers = true\nmax_same_clients = 0", false)
	if !strings.Contains(s.stderr.String(), "isolated: seccomp and Landlock applied") {
		t.Fatalf("no isolation line in the log")
	}
	c := connect(t, s, vpnUser, vpnPass)
	download(t, c, 1<<20, 6)
	checkNoSecrets(t, s, filepath.Join(dir, "users.passwd"))

	s.proc.cmd.Process.Signal(syscall.SIGUSR2)
	waitFor(t, 10*time.Second, "the hooks to report", func() bool {
		return strings.Contains(s.stderr.String(), "testhook: reading the key")
	})
	log := s.stderr.String()
	for _, want := range []string{`msg="testhook: execve /bin/true" err="fork/exec /bin/true: operation not permitted"`,
		`msg="testhook: reading the key" err="open ` + filepath.Join(s.stateDir, "server-key.pem") + `: permission denied"`,
		"security module: refused a malformed request"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	_, worker := moduleWorker(t, s.proc.cmd.Process.Pid)
	syscall.Kill(worker, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the worker's restart", func() bool {
		return strings.Contains(s.stderr.String(), "security module worker (re)started")
	})
	download(t, connect(t, s, vpnUser, vpnPass), 1<<20, 7)
}

// TestPrivsepBanSurvivesRestart: the ban table is the security module's: a wrong password scores, the module's
// worker is killed and restarted, a second wrong password completes the ban (the first one's points survived),
// and the banned address is refused even with the right password.
func TestPrivsepBanSurvivesRestart(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dir := newServerDir(t)
	s := startHooksServer(t, ns, dir, "max_ban_score = 20\nban_points_wrong_password = 10\nban_points_connection = 0\nban_time = 600\nrate_limit_ms = 0", false)
	c := launch(t, ns, s.pin, vpnUser, "wrong", s.url())
	c.waitExit(t, 20*time.Second)
	waitFor(t, 10*time.Second, "the points to reach the module's table", func() bool {
		b, _ := os.ReadFile(filepath.Join(s.stateDir, "bans.json"))
		return strings.Contains(string(b), `"score":10`)
	})
	_, worker := moduleWorker(t, s.proc.cmd.Process.Pid)
	syscall.Kill(worker, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the worker's restart", func() bool {
		return strings.Contains(s.stderr.String(), "security module worker (re)started")
	})
	if strings.Contains(s.stderr.String(), `msg="address banned"`) {
		t.Fatal("banned after one wrong password")
	}
	c = launch(t, ns, s.pin, vpnUser, "wrong", s.url())
	c.waitExit(t, 20*time.Second)
	waitFor(t, 5*time.Second, "the ban", func() bool { return strings.Contains(s.stderr.String(), `msg="address banned" remote=127.0.0.1`) })
	c = launch(t, ns, s.pin, vpnUser, vpnPass, s.url())
	if code := c.waitExit(t, 20*time.Second); code == 0 || configuredRE.MatchString(c.proc.out.String()) {
		t.Fatalf("banned address connected: exit %d\n%s", code, c.proc.out.String())
	}
}
