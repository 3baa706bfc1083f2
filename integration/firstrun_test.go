package integration

// First run and packaging: the commands a new user types before the first connection, the banner's client
// commands and password, a complete configuration run the way a container or a systemd DynamicUser runs it (a uid
// without a home, no writable state directory, no capabilities, the static release binary), the release script and
// the systemd units.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	releaseOnce sync.Once
	releaseDir  string
	releaseErr  error
)

const releaseVersion = "v0.0.0-it"

// releaseBinary builds the linux/amd64 release binary with scripts/release.sh, once per run.
func releaseBinary(t testing.TB) string {
	t.Helper()
	releaseOnce.Do(func() {
		releaseDir = filepath.Join(binDir, "release")
		cmd := exec.Command("sh", "scripts/release.sh", releaseVersion)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "OUT="+releaseDir, "PLATFORMS=linux/amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			releaseErr = fmt.Errorf("scripts/release.sh: %v\n%s", err, out)
		}
	})
	if releaseErr != nil {
		t.Fatal(releaseErr)
	}
	return filepath.Join(releaseDir, "ocgate-"+releaseVersion+"-linux-amd64")
}

// runBin runs an ocgate command line to its end (a server that started would hit the deadline).
func runBin(t *testing.T, bin string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e syncBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ocgate %s still running after 20s (a server started?)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), o.String(), e.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestReleaseBinary: the release script's static binary runs with an empty environment, says its version, and its
// SHA-256 sum is the one the script wrote.
func TestReleaseBinary(t *testing.T) {
	bin := releaseBinary(t)
	out, err := exec.Command("env", "-i", bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ocgate "+releaseVersion+"\n") || !strings.Contains(string(out), "CGO_ENABLED=0") ||
		!strings.Contains(string(out), "revision: ") {
		t.Fatalf("env -i %s version: %v\n%s", bin, err, out)
	}
	sums, err := os.ReadFile(filepath.Join(releaseDir, "SHA256SUMS-"+releaseVersion))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if !strings.Contains(string(sums), hex.EncodeToString(sum[:])+"  "+filepath.Base(bin)+"\n") {
		t.Fatalf("SHA256SUMS does not list %s with its sum:\n%s", filepath.Base(bin), sums)
	}
}

// TestCommandsStartNothing: version, help and the like print and exit; an unknown command or argument is refused
// with the usage and status 2; none of them starts a server.
func TestCommandsStartNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{"version"}, 0, "go: go1.", ""},
		{[]string{"--version"}, 0, "ocgate ", ""},
		{[]string{"help"}, 0, "config check FILE", ""},
		{[]string{"--help"}, 0, "--state-dir", ""},
		{[]string{"config", "--help"}, 0, "config defaults", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"serve", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"--bogus"}, 2, "", "unknown flag: --bogus"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runBin(t, ocgateBin, "", tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.errs) ||
				strings.Contains(stdout+stderr, "listening") || tc.code == 2 && !strings.Contains(stderr, "usage: ") {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
		})
	}
}

// completeConfigDir writes a certificate, its key and a password file (vpnUser) into dir, owned by the
// unprivileged user, while dir itself stays root's: nothing can be created there.
func completeConfigDir(t *testing.T) string {
	t.Helper()
	dir := tempDir(t)
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(dir, "server-key.pem"), "-out", filepath.Join(dir, "server-cert.pem"), "-days", "2",
		"-subj", "/CN=localhost").CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	cmd := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(dir, "users.passwd"), vpnUser)
	cmd.Stdin = strings.NewReader(vpnPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd: %v\n%s", err, out)
	}
	for _, f := range []string{"server-key.pem", "server-cert.pem", "users.passwd"} {
		os.Chown(filepath.Join(dir, f), unprivUID, unprivUID)
	}
	return dir
}

const completeConfig = "server_cert = \"server-cert.pem\"\nserver_key = \"server-key.pem\"\nauth = [\"plain[passwd=users.passwd]\"]\n"

// TestConfigCheckFiles: `config check` refuses a configuration whose key file or password file is missing, as the
// server's start would.
func TestConfigCheckFiles(t *testing.T) {
	t.Parallel()
	dir := completeConfigDir(t)
	for _, tc := range []struct {
		name, config string
		code         int
		want         string
	}{
		{"complete", completeConfig, 0, ": OK"},
		{"a missing key file", strings.Replace(completeConfig, "server-key.pem", "gone-key.pem", 1), 1, "gone-key.pem"},
		{"a missing password file", strings.Replace(completeConfig, "users.passwd", "gone.passwd", 1), 1, "gone.passwd"},
		{"server_cert without server_key", "server_cert = \"server-cert.pem\"\n", 1, "server_cert and server_key must be set together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runBin(t, ocgateBin, "", "config", "check", path)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Fatalf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
}

// TestCompleteConfigWithoutHome: the release binary with a complete configuration, run as the container image and
// the systemd unit run it (a uid whose home does not exist, no XDG variables, no writable directory of its own, no
// capabilities), serves the stock client.
func TestCompleteConfigWithoutHome(t *testing.T) {
	t.Parallel()
	bin := releaseBinary(t)
	ns := newNetns(t)
	ns.startTarget()
	dir := completeConfigDir(t)
	cfgPath := filepath.Join(dir, "ocgate.toml")
	cfg := "listen_host = \"127.0.0.1\"\ntcp_port = 8443\n" + publishTargets(completeConfig+"route = [\"10.77.0.0/24\"]\n")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, ns: ns, port: 8443, stateDir: dir, bin: bin,
		env: []string{"HOME=/nonexistent", "PATH=" + os.Getenv("PATH")}}
	s.start("-c", cfgPath)
	c := connect(t, s, vpnUser, vpnPass)
	download(t, c, 1<<20, 5)
	for _, w := range []string{"no control socket", "the ban table is kept in memory only"} {
		if !strings.Contains(s.stderr.String(), w) {
			t.Errorf("no warning %q:\n%s", w, s.stderr.String())
		}
	}
	if _, err := os.Stat("/nonexistent"); err == nil {
		t.Errorf("/nonexistent was created")
	}
}

// TestBannerCommands: the printed unprivileged client command, run as it is with the printed password, connects
// through ocproxy and the printed curl line fetches through the tunnel; after `ocgate passwd` changes the
// generated user's password, a restart prints no stale password, and the new one logs in.
func TestBannerCommands(t *testing.T) {
	t.Parallel()
	ns, lan, s := startFreshHomeServer(t)
	printed := s.stdout.String()
	unpriv := regexp.MustCompile(`(?m)^  (openconnect --servercert \S+ -u ocgate --script-tun --script "ocproxy -D 11080" https://\S+)$`).FindStringSubmatch(printed)
	curl := regexp.MustCompile(`(?m)^  (curl --socks5-hostname 127\.0\.0\.1:11080) http://HOST/$`).FindStringSubmatch(printed)
	pw := regexp.MustCompile(`(?m)^Password: (\S+)$`).FindStringSubmatch(printed)
	if unpriv == nil || curl == nil || pw == nil || !strings.Contains(printed, "Users reach: every address (route), except this host itself") {
		t.Fatalf("the banner lacks the unprivileged command, the curl line, the password or what users reach:\n%s", printed)
	}
	// The printed command exactly; openconnect asks for the password and reads it from standard input.
	p := ns.start(strings.NewReader(pw[1]+"\n"), "sh", "-c", "exec "+unpriv[1])
	waitFor(t, 30*time.Second, "the printed command's SOCKS port", func() bool {
		conn, err := ns.dial("127.0.0.1:11080")
		if err == nil {
			conn.Close()
		}
		return err == nil || p.exited()
	})
	if p.exited() {
		t.Fatalf("the printed command exited:\n%s", p.out.String())
	}
	if out, code := ns.output(60*time.Second, "sh", "-c", curl[1]+" -sS --fail --max-time 30 http://"+lan.String()+"/hello"); code != 0 ||
		!strings.Contains(out, "hello from "+lan.String()) {
		t.Fatalf("the printed curl line: exit %d %q\nopenconnect:\n%s", code, out, p.out.String())
	}
	p.stop(10 * time.Second)
	if code := s.stop(); code != 0 {
		t.Fatalf("SIGTERM: exit status %d", code)
	}

	const newPass = "a new password"
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", unprivUID), fmt.Sprintf("--regid=%d", unprivUID), "--clear-groups",
		ocgateBin, "passwd", "-c", filepath.Join(s.stateDir, "users.passwd"), "ocgate")
	cmd.Stdin = strings.NewReader(newPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd: %v\n%s", err, out)
	}
	s.start()
	again := s.stdout.String()
	if strings.Contains(again, pw[1]) || strings.Contains(again, "Password:") || !strings.Contains(again, "changed since") {
		t.Fatalf("after ocgate passwd, the restart printed:\n%s", again)
	}
	c := launch(t, ns, s.pin, "ocgate", newPass, s.url())
	c.waitConfigured(t)
}

// TestSystemdUnits: both units pass `systemd-analyze verify` (with ExecStart pointing at a binary that exists).
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"ocgate.service", "ocgate-tun.service"} {
		b, err := os.ReadFile(filepath.Join("..", "packaging", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		unit := regexp.MustCompile(`/usr/local/s?bin/ocgate`).ReplaceAllString(string(b), ocgateBin)
		if !strings.Contains(unit, "ExecStart="+ocgateBin+" serve") {
			t.Fatalf("%s: ExecStart is not the ocgate binary:\n%s", name, unit)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), dir) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
