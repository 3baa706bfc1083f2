package integration

// Authentication methods with the stock client: client certificates (alone, with a password, refused when
// revoked, expired or from another CA), group selection with --authgroup, and password then TOTP. The test
// certificates are made here with crypto/x509.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// testCA issues client certificates and CRLs.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, serial: 1}
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// issue writes DIR/NAME-cert.pem and DIR/NAME-key.pem for a client certificate with that common name (and OUs)
// valid until notAfter; it returns the openconnect arguments that present it and its serial number.
func (ca *testCA) issue(t testing.TB, dir, cn string, notAfter time.Time, ous ...string) ([]string, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	serial := big.NewInt(ca.serial)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s-%d-%d", cn, ca.serial, ca.cert.SerialNumber.Int64()^ca.key.X.Int64()) // unique across CAs
	certPath, keyPath := filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "PRIVATE KEY", kder)
	return []string{"-c", certPath, "-k", keyPath}, serial
}

// writeCRL writes a CRL of ca revoking serials.
func (ca *testCA) writeCRL(t testing.TB, path string, serials ...*big.Int) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
		ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: entries}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "X509 CRL", der)
}

// launchWith starts openconnect with args (and stdin) and returns at once.
func launchWith(t testing.TB, s *server, stdin string, args ...string) *client {
	t.Helper()
	socks := 11080 + int(portCursor.Add(1))
	full := append([]string{"openconnect", "-v", "--protocol=anyconnect", "--servercert", s.pin, "--script-tun",
		"--script", fmt.Sprintf("ocproxy -D %d", socks)}, args...)
	full = append(full, s.url())
	return &client{ns: s.ns, proc: s.ns.start(strings.NewReader(stdin), full...), socksPort: socks}
}

// refused waits for the client to exit without connecting and returns its output.
func refused(t testing.TB, c *client) string {
	t.Helper()
	code := c.waitExit(t, 30*time.Second)
	out := c.proc.out.String()
	if code == 0 || configuredRE.MatchString(out) {
		t.Fatalf("openconnect was not refused (exit %d):\n%s", code, out)
	}
	return out
}

// certRig is a server whose ca_cert is ca, with a CRL, and a directory for the clients' certificates.
type certRig struct {
	ns      *netns
	s       *server
	ca      *testCA
	clients string
}

func newCertRig(t *testing.T, config string, revoke bool) (*certRig, []string) {
	ns := newNetns(t)
	dir := newServerDir(t)
	r := &certRig{ns: ns, ca: newTestCA(t, "ocgate test CA"), clients: tempDir(t)}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", r.ca.cert.Raw)
	var revokedArgs []string
	var serials []*big.Int
	if revoke {
		var serial *big.Int
		revokedArgs, serial = r.ca.issue(t, r.clients, "alice", time.Now().Add(time.Hour))
		serials = append(serials, serial)
	}
	r.ca.writeCRL(t, filepath.Join(dir, "crl.pem"), serials...)
	r.s = startServer(t, ns, dir, "ca_cert = \"ca.pem\"\ncrl = \"crl.pem\"\n"+config)
	return r, revokedArgs
}

// TestCertificateLogin: auth = ["certificate"]: openconnect -c/-k logs in with no prompt, over TLS 1.3 and 1.2;
// revoked, expired and wrong-CA certificates are refused in the TLS handshake, and so is a client without one.
func TestCertificateLogin(t *testing.T) {
	t.Parallel()
	r, revokedArgs := newCertRig(t, `auth = ["certificate"]`, true)
	good, _ := r.ca.issue(t, r.clients, "alice", time.Now().Add(time.Hour))
	c := launchWith(t, r.s, "", append(good, "--non-inter")...)
	c.waitConfigured(t)
	if !strings.Contains(r.s.stderr.String(), `msg="auth success" user=alice`) {
		t.Fatalf("no auth success for alice in the server log")
	}
	if !strings.Contains(c.proc.out.String(), "with ciphersuite (TLS1.3)") {
		t.Errorf("the default handshake was not TLS 1.3:\n%s", c.proc.out.String())
	}
	tls12 := []string{"--gnutls-priority", "NORMAL:-VERS-TLS1.3:%COMPAT"}
	t.Run("TLS 1.2", func(t *testing.T) {
		c := launchWith(t, r.s, "", append(append(good, "--non-inter"), tls12...)...)
		c.waitConfigured(t)
		if !strings.Contains(c.proc.out.String(), "with ciphersuite (TLS1.2)") {
			t.Fatalf("not a TLS 1.2 handshake:\n%s", c.proc.out.String())
		}
	})
	expired, _ := r.ca.issue(t, r.clients, "alice", time.Now().Add(-time.Hour))
	wrongCA, _ := newTestCA(t, "another CA").issue(t, r.clients, "alice", time.Now().Add(time.Hour))
	for _, version := range []struct {
		name string
		args []string
	}{{"TLS 1.3", nil}, {"TLS 1.2", tls12}} {
		for _, tc := range []struct {
			name string
			args []string
			log  string // in the server's log, once more for each refusal
		}{
			{"revoked", revokedArgs, "certificate revoked"},
			{"expired", expired, "expired"},
			{"wrong CA", wrongCA, "unknown authority"},
			{"none", nil, "no client certificate"},
		} {
			t.Run(version.name+"/"+tc.name, func(t *testing.T) {
				before := strings.Count(r.s.stderr.String(), tc.log)
				refused(t, launchWith(t, r.s, "", append(append(tc.args, "--non-inter"), version.args...)...))
				waitFor(t, 10*time.Second, "the refusal in the server log", func() bool {
					return strings.Count(r.s.stderr.String(), tc.log) > before
				})
			})
		}
	}
}

// TestCertificateBoundCookie: a session that logged in with a certificate (openconnect --authenticate -c/-k)
// takes a CONNECT only over a connection presenting that certificate, as ocserv: its cookie alone, or with another
// valid certificate, is refused with a 401; with the certificate it connects.
func TestCertificateBoundCookie(t *testing.T) {
	t.Parallel()
	r, _ := newCertRig(t, `auth = ["certificate"]`, false)
	alice, _ := r.ca.issue(t, r.clients, "alice", time.Now().Add(time.Hour))
	bob, _ := r.ca.issue(t, r.clients, "bob", time.Now().Add(time.Hour))
	out, code := r.ns.output(30*time.Second, append(append([]string{"openconnect", "--protocol=anyconnect",
		"--servercert", r.s.pin, "--non-inter", "--authenticate"}, alice...), r.s.url())...)
	m := regexp.MustCompile(`(?m)^COOKIE='([^']+)'$`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("openconnect --authenticate: exit %d\n%s", code, out)
	}
	cookie := m[1]
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no certificate", nil},
		{"another user's certificate", bob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := refused(t, launchCookie(t, r.s, cookie, tc.args...))
			if !strings.Contains(out, "401") {
				t.Fatalf("want a 401:\n%s", out)
			}
			waitFor(t, 10*time.Second, "the refusal in the server log", func() bool {
				return strings.Contains(r.s.stderr.String(), "logged in with a certificate this connection does not present")
			})
		})
	}
	c := launchCookie(t, r.s, cookie, alice...)
	c.waitConfigured(t)
}

// TestCertificateAndPassword: auth = ["certificate", "plain[...]"] needs both: the certificate's user with that
// user's password passes; a password alone, or alice's certificate with bob's name and password, do not.
func TestCertificateAndPassword(t *testing.T) {
	t.Parallel()
	r, _ := newCertRig(t, `auth = ["certificate", "plain[passwd=users.passwd]"]`, false)
	cmd := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(r.s.dir, "users.passwd"), "bob")
	cmd.Stdin = strings.NewReader("bob's password\nbob's password\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd: %v\n%s", err, out)
	}
	chownAll(t, r.s.dir)
	alice, _ := r.ca.issue(t, r.clients, vpnUser, time.Now().Add(time.Hour))
	c := launchWith(t, r.s, vpnPass+"\n", append(alice, "-u", vpnUser, "--passwd-on-stdin", "--non-inter")...)
	c.waitConfigured(t)
	t.Run("password alone", func(t *testing.T) {
		refused(t, launchWith(t, r.s, vpnPass+"\n", "-u", vpnUser, "--passwd-on-stdin", "--non-inter"))
	})
	t.Run("alice's certificate as bob", func(t *testing.T) {
		refused(t, launchWith(t, r.s, "bob's password\n", append(alice, "-u", "bob", "--passwd-on-stdin", "--non-inter")...))
		waitFor(t, 10*time.Second, "the refusal in the server log", func() bool {
			return strings.Contains(r.s.stderr.String(), `the certificate is \"alice\"'s`)
		})
	})
}

// TestAuthGroup: select_group offers groups; --authgroup picks one by its label, whose config_per_group file's
// routes the client receives; a group the user is not in is refused.
func TestAuthGroup(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dir := newServerDir(t)
	cmd := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(dir, "users.passwd"), "-g", "eng,ops", vpnUser)
	cmd.Stdin = strings.NewReader(vpnPass + "\n" + vpnPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd: %v\n%s", err, out)
	}
	os.MkdirAll(filepath.Join(dir, "groups"), 0o755)
	os.WriteFile(filepath.Join(dir, "groups", "ops"), []byte("route = [\"10.66.0.0/16\"]\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "groups", "eng"), []byte("route = [\"10.55.0.0/16\"]\n"), 0o644)
	s := startServer(t, ns, dir, `route = ["10.77.0.0/24"]
config_per_group = "groups"
select_group = ["eng[Engineering]", "ops[Operations]", "sales[Sales]"]`)
	c := launch(t, ns, s.pin, vpnUser, vpnPass, s.url(), "--authgroup", "Operations")
	c.waitConfigured(t)
	out := c.proc.out.String()
	if !strings.Contains(out, "X-CSTP-Split-Include: 10.66.0.0") || strings.Contains(out, "X-CSTP-Split-Include: 10.55.0.0") {
		t.Fatalf("the group ops's routes were not pushed:\n%s", out)
	}
	t.Run("foreign group", func(t *testing.T) {
		out := refused(t, launch(t, ns, s.pin, vpnUser, vpnPass, s.url(), "--authgroup", "Sales"))
		if !strings.Contains(out, "401") {
			t.Fatalf("want a 401:\n%s", out)
		}
	})
}

// TestPasswordThenTOTP: plain[passwd=...,otp=...] asks for the password, then the one-time password (the client
// answers both on stdin); the same code again is refused as a replay, and a wrong code is refused.
func TestPasswordThenTOTP(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dir := newServerDir(t)
	const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // base32 of the key below
	os.WriteFile(filepath.Join(dir, "users.oath"), []byte("HOTP/T30 alice - 3132333435363738393031323334353637383930\n"), 0o600)
	s := startServer(t, ns, dir, `auth = ["plain[passwd=users.passwd,otp=users.oath]"]`)
	code, err := totp.GenerateCodeCustom(secret, time.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	login := func(code string) *client {
		return launchWith(t, s, vpnPass+"\n"+code+"\n", "-u", vpnUser, "--passwd-on-stdin")
	}
	c := login(code)
	c.waitConfigured(t)
	if !strings.Contains(c.proc.out.String(), "OTP:") && !strings.Contains(c.proc.out.String(), "one-time password") {
		t.Errorf("the client did not show the OTP prompt:\n%s", c.proc.out.String())
	}
	t.Run("replay", func(t *testing.T) {
		refused(t, login(code))
		waitFor(t, 10*time.Second, "the replay in the server log", func() bool {
			return strings.Contains(s.stderr.String(), "one-time password replayed")
		})
	})
	t.Run("wrong code", func(t *testing.T) {
		wrong := fmt.Sprintf("%06d", (mustAtoi(t, code)+500000)%1000000)
		refused(t, login(wrong))
		waitFor(t, 10*time.Second, "the wrong code in the server log", func() bool {
			return strings.Contains(s.stderr.String(), "wrong one-time password")
		})
	})
	data, _ := os.ReadFile(filepath.Join(dir, "users.oath"))
	if f := strings.Fields(string(data)); len(f) < 7 || f[5] != code {
		t.Errorf("the state was not written back: %q", data)
	}
	if strings.Contains(s.stderr.String(), code) || strings.Contains(s.stderr.String(), vpnPass) {
		t.Errorf("a secret appears in the server log")
	}
}

func mustAtoi(t testing.TB, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
