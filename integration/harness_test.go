// Package integration holds the end-to-end tests: they drive the stock openconnect client (with ocproxy, so the
// client needs no TUN either) against an ocgate server running as an unprivileged user inside a network namespace
// that each test creates and removes. Targets live on extra addresses of that namespace's loopback interface
// (this kernel has no dummy driver), so the server's host loopback stays a trap.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	binDir     string // built binaries: ocgate, testtarget
	ocgateBin  string
	targetBin  string
	nsCounter  atomic.Int32
	portCursor atomic.Int32
)

const (
	unprivUID = 65534
	vpnUser   = "alice"
	vpnPass   = "correct horse"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// run skips the package only for a non-root user who did not ask for it (so that `go test ./...` works as a user);
// as root, or with OCGATE_E2E set, it runs, and a missing tool fails the run rather than skipping it.
func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("OCGATE_E2E") == "" {
			flag.Parse()
			fmt.Fprintln(os.Stderr, "integration: SKIPPED: the end-to-end tests need root (they create network namespaces; "+
				"the server under test runs unprivileged). Run them as root: bash integration/test.sh")
			flag.Set("test.run", "^$")
			return m.Run()
		}
		fmt.Fprintln(os.Stderr, "integration: OCGATE_E2E is set but these tests must run as root (they create network namespaces)")
		return 1
	}
	for _, tool := range []string{"openconnect", "ocproxy", "curl", "ip", "ss", "setpriv", "nft", "ping", "sysctl", "ethtool", "freeradius", "openssl", "systemd-analyze", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "integration: %s is missing (integration/test.sh installs it): %v\n", tool, err)
			return 1
		}
	}
	var err error
	binDir, err = os.MkdirTemp("", "ocgate-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	os.Chmod(binDir, 0o755)
	ocgateBin, targetBin = filepath.Join(binDir, "ocgate"), filepath.Join(binDir, "testtarget")
	for bin, pkg := range map[string]string{ocgateBin: "./cmd/ocgate", targetBin: "./integration/testtarget"} {
		args := []string{"build", "-o", bin}
		if os.Getenv("OCGATE_IT_RACE") != "" && bin == ocgateBin {
			args = append(args, "-race") // the server under test with the race detector: OCGATE_IT_RACE=1
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: go build %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a process the test started.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startProc(t testing.TB, stdin io.Reader, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdin, p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(5 * time.Second) })
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to d, then kills. It returns the exit code.
func (p *proc) stop(d time.Duration) int {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(d):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// netns is a network namespace owned by one test.
type netns struct {
	t    testing.TB
	name string
}

// newNetns creates a namespace with lo up and the target addresses on lo, and /etc/netns/NAME/hosts naming
// target.test, which `ip netns exec` bind-mounts over /etc/hosts for every process started in it.
func newNetns(t testing.TB) *netns {
	t.Helper()
	ns := newBareNetns(t)
	name := ns.name
	for _, a := range []string{"10.77.0.1/32", "10.77.0.2/32", "10.88.0.1/32"} {
		ns.must("ip", "-n", name, "addr", "add", a, "dev", "lo")
	}
	etc := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1 localhost\n10.77.0.1 target.test\n10.77.0.2 denied.test\n10.88.0.1 unrouted.test\n"
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return ns
}

// newLAN gives ns a network behind it: a namespace of its own joined to ns by a veth (ns 10.44.0.1/24, the LAN
// 10.44.0.2/24) with a testtarget listening on 10.44.0.2:8080. Unlike the targets on ns's lo, which are the
// server host's own addresses, it is another host: the netstack reaches it without egress_allow.
func newLAN(t testing.TB, ns *netns) netip.AddrPort {
	t.Helper()
	lan := newBareNetns(t)
	n := vethCounter.Add(1)
	sv, lv := fmt.Sprintf("ocl%ds", n), fmt.Sprintf("ocl%dl", n)
	lan.must("ip", "link", "add", sv, "netns", ns.name, "type", "veth", "peer", "name", lv, "netns", lan.name)
	lan.must("ip", "-n", ns.name, "addr", "add", "10.44.0.1/24", "dev", sv)
	lan.must("ip", "-n", ns.name, "link", "set", sv, "up")
	lan.must("ip", "-n", lan.name, "addr", "add", "10.44.0.2/24", "dev", lv)
	lan.must("ip", "-n", lan.name, "link", "set", lv, "up")
	p := lan.start(nil, targetBin, "-listen", "10.44.0.2:8080")
	waitFor(t, 10*time.Second, "the LAN's testtarget to listen", func() bool {
		return strings.Contains(p.out.String(), "ready") || p.exited()
	})
	return netip.MustParseAddrPort("10.44.0.2:8080")
}

// newBareNetns creates a namespace with only lo up (a client's side in the kernel-TUN tests).
func newBareNetns(t testing.TB) *netns {
	t.Helper()
	name := fmt.Sprintf("ocgt-%d-%d", os.Getpid(), nsCounter.Add(1))
	ns := &netns{t: t, name: name}
	ns.must("ip", "netns", "add", name)
	t.Cleanup(ns.remove)
	ns.must("ip", "-n", name, "link", "set", "lo", "up")
	// ocproxy aborts a SOCKS connection (a reset into the tunnel, "transfer closed" for curl) when its write to the
	// local socket fails with EAGAIN, i.e. when curl falls behind by a full socket buffer, which happens on a
	// loaded machine. Large socket buffers in the test namespaces let curl fall behind by as much as any test
	// downloads instead.
	ns.must("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.tcp_wmem=4096 33554432 67108864",
		"net.ipv4.tcp_rmem=4096 131072 67108864")
	return ns
}

func (ns *netns) must(args ...string) {
	ns.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		ns.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (ns *netns) remove() {
	out, _ := exec.Command("ip", "netns", "pids", ns.name).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		fmt.Sscan(f, &pid)
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	exec.Command("ip", "netns", "del", ns.name).Run()
	os.RemoveAll(filepath.Join("/etc/netns", ns.name))
}

// exec starts a command inside the namespace.
func (ns *netns) start(stdin io.Reader, args ...string) *proc {
	ns.t.Helper()
	return startProc(ns.t, stdin, "ip", append([]string{"netns", "exec", ns.name}, args...)...)
}

// output runs a command inside the namespace and returns its combined output and exit code.
func (ns *netns) output(timeout time.Duration, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name}, args...)...)
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// dial opens a TCP connection from inside the namespace (for Go-level protocol tests).
func (ns *netns) dial(addr string) (c net.Conn, err error) {
	err = ns.inside(func() error {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// inside runs fn with this goroutine's thread in the namespace: sockets fn opens belong to it.
func (ns *netns) inside(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", ns.name))
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		panic("cannot return to the original network namespace: " + err.Error())
	}
	return fnErr
}

// startTarget runs testtarget on the namespace's target addresses and its loopback trap (127.0.0.1:8081).
func (ns *netns) startTarget() {
	ns.t.Helper()
	p := ns.start(nil, targetBin, "-listen", "10.77.0.1:8080,10.77.0.2:8080,10.88.0.1:8080,127.0.0.1:8081")
	waitFor(ns.t, 10*time.Second, "testtarget to listen", func() bool {
		return strings.Contains(p.out.String(), "ready") || p.exited()
	})
	if p.exited() {
		ns.t.Fatalf("testtarget exited: %s", p.out.String())
	}
}

// server is an ocgate process under test.
type server struct {
	t           testing.TB
	ns          *netns
	dir         string // config + state, owned by the unprivileged user
	stateDir    string
	port        int
	proc        *proc
	stdout      *syncBuffer
	stderr      *syncBuffer
	pin         string
	env         []string // the server's environment; nil = the test's
	root        bool     // run as root (kernel-TUN mode; the config's run_as_user drops privileges)
	setprivArgs []string // more setpriv arguments for the unprivileged server
	host        string   // address in the URL; "" = 127.0.0.1
	bin         string   // the ocgate binary; "" = ocgateBin
}

// newServerDir prepares a directory owned by the unprivileged user with a password file for vpnUser and
// "locked" (locked), and returns it.
func newServerDir(t testing.TB) string {
	t.Helper()
	dir := tempDir(t)
	for _, u := range []string{vpnUser, "locked"} {
		cmd := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(dir, "users.passwd"), u)
		cmd.Stdin = strings.NewReader(vpnPass + "\n" + vpnPass + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ocgate passwd: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(dir, "users.passwd"), "-l", "locked").CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd -l: %v\n%s", err, out)
	}
	chownAll(t, dir)
	return dir
}

// tempDir is a directory the unprivileged server can enter (t.TempDir's parent is private to root).
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ocgate-it-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func chownAll(t testing.TB, dir string) {
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Chown(p, unprivUID, unprivUID)
		}
		return nil
	})
}

// startServer writes config (TOML lines, plus listen/port/auth) into dir and runs ocgate as uid 65534 in ns.
func startServer(t testing.TB, ns *netns, dir string, config string) *server {
	t.Helper()
	return startServerAs(t, ns, dir, config, false, "")
}

// startServerAs is startServer with the server run as root (kernel-TUN mode) and reached at host; setprivArgs
// are added to setpriv's arguments (e.g. capabilities) when not root.
// targetPrefixes are the test targets' addresses (newNetns, the IPv6 tests): on the server namespace's lo, so they
// are the server host's own addresses, which the netstack refuses unless egress_allow names them.
const targetPrefixes = `"10.77.0.0/24", "10.88.0.0/24", "fd99::/64", "fd98::/64"`

// publishTargets adds targetPrefixes to a netstack config's egress_allow (the test targets stand for hosts of the
// network behind the server); a config that says publish_targets = false, or runs the kernel-TUN datapath (where
// the kernel routes and egress_allow does not apply), is left as it is.
func publishTargets(config string) string {
	if strings.Contains(config, `datapath = "tun"`) {
		return config
	}
	if c, ok := strings.CutPrefix(config, "publish_targets = false\n"); ok {
		return c
	}
	if i := strings.Index(config, "egress_allow = ["); i >= 0 {
		j := i + len("egress_allow = [")
		return config[:j] + targetPrefixes + ", " + config[j:]
	}
	return "egress_allow = [" + targetPrefixes + "]\n" + config
}

func startServerAs(t testing.TB, ns *netns, dir string, config string, root bool, host string, setprivArgs ...string) *server {
	t.Helper()
	port := 8443
	cfg := fmt.Sprintf("tcp_port = %d\nauth = [\"plain[passwd=users.passwd]\"]\n%s\n", port, publishTargets(config))
	if strings.HasPrefix(config, "auth = ") || strings.Contains(config, "\nauth = ") { // the test's own methods
		cfg = fmt.Sprintf("tcp_port = %d\n%s\n", port, publishTargets(config))
	}
	if !strings.Contains(config, "listen_host") {
		cfg = "listen_host = \"127.0.0.1\"\n" + cfg
	}
	cfgPath := filepath.Join(dir, "ocgate.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, ns: ns, dir: dir, stateDir: filepath.Join(dir, "state"), port: port, root: root, host: host,
		setprivArgs: setprivArgs}
	os.MkdirAll(s.stateDir, 0o700)
	chownAll(t, dir)
	s.start("-c", cfgPath, "--state-dir", s.stateDir, "--log-level", "debug")
	return s
}

func (s *server) start(args ...string) {
	s.t.Helper()
	s.stdout, s.stderr = &syncBuffer{}, &syncBuffer{}
	sp := append([]string{"netns", "exec", s.ns.name, "setpriv", fmt.Sprintf("--reuid=%d", unprivUID),
		fmt.Sprintf("--regid=%d", unprivUID), "--clear-groups"}, s.setprivArgs...)
	bin := ocgateBin
	if s.bin != "" {
		bin = s.bin
	}
	cmd := exec.Command("ip", append(append(sp, bin), args...)...)
	if s.root {
		cmd = exec.Command("ip", append([]string{"netns", "exec", s.ns.name, bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	cmd.Env = s.env
	p := &proc{cmd: cmd, out: s.stderr, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.proc = p
	s.t.Cleanup(func() {
		if s.t.Failed() && os.Getenv("OCGATE_IT_DUMP") != "" && !p.exited() {
			p.cmd.Process.Signal(syscall.SIGQUIT) // the Go runtime prints every goroutine's stack
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
			}
		}
		p.stop(5 * time.Second)
		if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
			s.t.Errorf("the race detector reported a data race in ocgate (OCGATE_IT_RACE)")
		}
		if s.t.Failed() {
			s.t.Logf("ocgate stdout:\n%s\nocgate stderr:\n%s", s.stdout.String(), s.stderr.String())
		}
	})
	waitFor(s.t, 20*time.Second, "ocgate to print how to connect", func() bool {
		return strings.Contains(s.stdout.String(), "Connect with:") || p.exited()
	})
	if p.exited() {
		s.t.Fatalf("ocgate exited: %v\nstdout:\n%s\nstderr:\n%s", p.err, s.stdout.String(), s.stderr.String())
	}
	s.pin = pinOf(s.t, filepath.Join(s.stateDir, "server-cert.pem"))
}

// stop stops the server with SIGTERM and returns its exit code.
func (s *server) stop() int { return s.proc.stop(10 * time.Second) }

func (s *server) url() string {
	host := s.host
	if host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("https://%s:%d/", host, s.port)
}

// pinOf computes openconnect's pin-sha256 of a certificate's public key.
func pinOf(t testing.TB, certPath string) string {
	t.Helper()
	b, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", certPath)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "pin-sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// client is a running openconnect with ocproxy.
type client struct {
	ns        *netns
	proc      *proc
	socksPort int
	ip        string
}

var configuredRE = regexp.MustCompile(`(?:Configured|Connected) as ([0-9.]+)`)

// connect runs the stock client (password on stdin, unprivileged ocproxy as its tunnel) and waits until it is
// configured.
func connect(t testing.TB, s *server, user, pass string, extra ...string) *client {
	t.Helper()
	c := launch(t, s.ns, s.pin, user, pass, s.url(), extra...)
	c.waitConfigured(t)
	return c
}

// authenticate logs in with `openconnect --authenticate` and returns the cookie line it prints (COOKIE='...').
func authenticate(t testing.TB, s *server, user, pass string) string {
	t.Helper()
	out, code := s.ns.output(30*time.Second, "sh", "-c", fmt.Sprintf(
		"printf '%%s\\n' %q | openconnect --protocol=anyconnect --servercert %s -u %s --passwd-on-stdin --non-inter --authenticate %s",
		pass, s.pin, user, s.url()))
	m := regexp.MustCompile(`(?m)^COOKIE='([^']+)'$`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("openconnect --authenticate: exit %d\n%s", code, out)
	}
	return m[1]
}

// launchCookie starts the client with a cookie (no login) and returns at once.
func launchCookie(t testing.TB, s *server, cookie string, extra ...string) *client {
	t.Helper()
	return launchCookieURL(t, s, cookie, s.url(), extra...)
}

// launchCookieURL is launchCookie towards another URL of the same server.
func launchCookieURL(t testing.TB, s *server, cookie, url string, extra ...string) *client {
	t.Helper()
	socks := 11080 + int(portCursor.Add(1))
	args := append([]string{"openconnect", "-v", "--protocol=anyconnect", "--servercert", s.pin, "--cookie-on-stdin",
		"--script-tun", "--script", fmt.Sprintf("ocproxy -D %d", socks)}, extra...)
	args = append(args, url)
	return &client{ns: s.ns, proc: s.ns.start(strings.NewReader(cookie+"\n"), args...), socksPort: socks}
}

// connectCookie connects with a cookie and waits until the client is configured.
func connectCookie(t testing.TB, s *server, cookie string) *client {
	t.Helper()
	c := launchCookie(t, s, cookie)
	c.waitConfigured(t)
	return c
}

// waitConfigured waits for "Configured as", records the address and waits for ocproxy's SOCKS port.
func (c *client) waitConfigured(t testing.TB) {
	t.Helper()
	waitFor(t, 30*time.Second, "openconnect to be configured", func() bool {
		return configuredRE.MatchString(c.proc.out.String()) || c.proc.exited()
	})
	if c.proc.exited() {
		t.Fatalf("openconnect exited before connecting: %v\n%s", c.proc.err, c.proc.out.String())
	}
	c.ip = configuredRE.FindStringSubmatch(c.proc.out.String())[1]
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("openconnect output:\n%s", c.proc.out.String())
		}
	})
	waitFor(t, 10*time.Second, "ocproxy's SOCKS port", func() bool {
		conn, err := c.ns.dial(fmt.Sprintf("127.0.0.1:%d", c.socksPort))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// waitExit waits for the client to exit and returns its exit code.
func (c *client) waitExit(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-c.proc.done:
	case <-time.After(d):
		t.Fatalf("openconnect still running after %s:\n%s", d, c.proc.out.String())
	}
	return c.proc.cmd.ProcessState.ExitCode()
}

func launch(t testing.TB, ns *netns, pin, user, pass, url string, extra ...string) *client {
	t.Helper()
	socks := 11080 + int(portCursor.Add(1))
	args := append([]string{"openconnect", "-v", "--protocol=anyconnect", "--servercert", pin, "-u", user,
		"--passwd-on-stdin", "--non-inter", "--script-tun", "--script", fmt.Sprintf("ocproxy -D %d", socks)}, extra...)
	args = append(args, url)
	return &client{ns: ns, proc: ns.start(strings.NewReader(pass+"\n"), args...), socksPort: socks}
}

// curl runs curl through the client's SOCKS proxy (names resolved through the tunnel) and returns stdout+stderr
// and the exit code.
func (c *client) curl(args ...string) (string, int) {
	return c.ns.output(90*time.Second, append([]string{"curl", "-sS", "--max-time", "60",
		"--socks5-hostname", fmt.Sprintf("127.0.0.1:%d", c.socksPort)}, args...)...)
}

// readLines returns the lines of s.
func readLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
