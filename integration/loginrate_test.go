package integration

// Login rates of each authentication method, measured with the load generator (integration/loadgen) inside the
// test's namespace: password, certificate, password then TOTP, and RADIUS against FreeRADIUS. Not a pass/fail
// test: it runs only with OCGATE_BENCH_LOGINS=N (N logins per method) and logs a table. Each login is a whole
// session set-up (TCP, TLS, the XML forms, CONNECT, CSTP only); "auth" is the time from the TLS handshake's end
// to the cookie, measured one login at a time, so the difference between two methods is what a step adds. The
// FreeRADIUS here runs with -X (debug output, one thread), as the RADIUS tests start it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLoginRates(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("OCGATE_BENCH_LOGINS"))
	if n <= 0 {
		t.Skip("a measurement: OCGATE_BENCH_LOGINS=N runs N logins per method")
	}
	lg := buildLoadgen(t)
	ns := newNetns(t)
	startFreeRADIUS(t, ns, "DEFAULT Cleartext-Password := \"pw\"\n")
	const secret = "3132333435363738393031323334353637383930" // the TOTP key, hex
	ca := newTestCA(t, "ocgate bench CA")
	certArgs, _ := ca.issue(t, tempDir(t), "u0", time.Now().Add(time.Hour))
	common := "max_clients = 10000\nmax_same_clients = 0\nrate_limit_ms = 0\nmax_ban_score = 0\n" +
		"ipv4_network = \"10.250.0.0/16\"\nmax_unauth_per_ip = 0\n"
	methods := []struct {
		name, config string
		args         []string
		over         string // the method this one adds a step to
	}{
		{"password", `auth = ["plain[passwd=bench.passwd]"]`, []string{"--password", vpnPass}, ""},
		{"certificate", `auth = ["certificate"]` + "\nca_cert = \"ca.pem\"", certArgs, ""},
		{"certificate+password", `auth = ["certificate", "plain[passwd=bench.passwd]"]` + "\nca_cert = \"ca.pem\"",
			append(certArgs, "--user", "u0", "--password", vpnPass), "certificate"},
		{"password+TOTP", `auth = ["plain[passwd=bench.passwd,otp=bench.oath]"]`,
			[]string{"--password", vpnPass, "--token-secret", "0x" + secret}, "password"},
		{"RADIUS", `auth = ["radius[config=radiusclient.conf]"]`, []string{"--password", "pw"}, "password"},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-22s %10s %12s   %s\n", "method", "logins/s", "auth p50 ms", "adds (p50 ms)")
	authP50 := map[string]float64{}
	for _, m := range methods {
		dir := newServerDir(t)
		benchUsers(t, dir, n, secret)
		radcliFiles(t, dir)
		writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.cert.Raw)
		chownAll(t, dir)
		s := startServer(t, ns, dir, common+m.config)
		run := func(user string, count, conc int) loadReport {
			return runLogins(t, lg, s, m.name, user, count, conc, m.args...)
		}
		par := run("u%d", n, 16)
		seq := run("v%d", min(n, 200), 1)
		auth := seq.Stages["auth"].P50 - seq.Stages["tls"].P50
		authP50[m.name] = auth
		adds := ""
		if m.over != "" {
			adds = fmt.Sprintf("%+.2f over %s", auth-authP50[m.over], m.over)
		}
		fmt.Fprintf(&table, "%-22s %10.0f %12.2f   %s\n", m.name, par.PerSecond, auth, adds)
		s.stop()
	}
	t.Logf("%d logins per method, 16 in parallel (logins/s); one at a time (auth: TLS end to cookie):\n%s",
		n, table.String())
}

// buildLoadgen builds integration/loadgen into a temporary directory and returns its path.
func buildLoadgen(t *testing.T) string {
	t.Helper()
	lg := filepath.Join(tempDir(t), "loadgen")
	build := exec.Command("go", "build", "-o", lg, "./integration/loadgen")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	return lg
}

// runLogins runs the load generator against s: count logins (and CONNECTs) of users named by the pattern user,
// conc at a time, each session ended at once; name labels a failure.
func runLogins(t *testing.T, lg string, s *server, name, user string, count, conc int, extra ...string) loadReport {
	t.Helper()
	args := append([]string{lg, "--url", s.url(), "--pin", s.pin, "--user", user, "-n", strconv.Itoa(count),
		"--concurrency", strconv.Itoa(conc), "--mode", "idle", "--duration", "0s", "--settle", "0s",
		"--dtls=false", "--json", "-q"}, extra...)
	out, code := s.ns.output(10*time.Minute, args...)
	var r loadReport
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil || code != 0 {
		t.Fatalf("%s: loadgen exit %d, %v:\n%s", name, code, err, out)
	}
	return r
}

type loadReport struct {
	PerSecond float64 `json:"sessions_per_second"`
	Stages    map[string]struct {
		P50 float64 `json:"p50"`
	} `json:"stage_latency_ms"`
}

// benchUsers writes bench.passwd with users u0..u(n-1) and v0..v(n-1) (a code is taken once per user and time
// step), all with vpnPass (one hash copied), and bench.oath with the same TOTP key for each.
func benchUsers(t *testing.T, dir string, n int, hexKey string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "users.passwd"))
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[0] == vpnUser {
			hash = f[2]
		}
	}
	var pw, oath bytes.Buffer
	for _, prefix := range []string{"u", "v"} {
		for i := range n {
			fmt.Fprintf(&pw, "%s%d:*:%s\n", prefix, i, hash)
			fmt.Fprintf(&oath, "HOTP/T30 %s%d - %s\n", prefix, i, hexKey)
		}
	}
	os.WriteFile(filepath.Join(dir, "bench.passwd"), pw.Bytes(), 0o600)
	os.WriteFile(filepath.Join(dir, "bench.oath"), oath.Bytes(), 0o600)
}
