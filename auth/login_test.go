package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

type fakePasswords map[string]struct {
	pw     string
	groups []string
}

func (f fakePasswords) CheckPassword(_ context.Context, user, pw string) (Identity, error) {
	if e, ok := f[user]; ok && e.pw == pw {
		return Identity{User: user, Groups: e.groups}, nil
	}
	return Identity{}, ErrBadCredentials
}

var users = fakePasswords{
	"alice": {"pw-a", []string{"eng", "ops"}},
	"bob":   {"pw-b", nil},
}

// certDER is a self-signed certificate (the module reads identities; the TLS handshake verifies).
func certDER(t testing.TB, cn string, ous ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subj := pkix.Name{CommonName: cn, OrganizationalUnit: ous}
	subj.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: "uid-" + cn}}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subj, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		EmailAddresses: []string{cn + "@example.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// run feeds the steps to m and returns the last reply, failing when an earlier one is not Continue.
func run(t *testing.T, m *Module, cert []byte, steps ...Request) Reply {
	t.Helper()
	var r Reply
	for i, req := range steps {
		req.LoginID, req.ClientCert = r.LoginID, cert
		r = m.Step(context.Background(), req)
		if i < len(steps)-1 && r.Verdict != Continue {
			t.Fatalf("step %d: verdict %d (%s), want Continue", i, r.Verdict, r.Reason)
		}
	}
	return r
}

func answer(kv ...string) Request {
	a := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		a[kv[i]] = kv[i+1]
	}
	return Request{Answers: a}
}

func TestLoginChains(t *testing.T) {
	certMethod := &CertMethod{}
	init := Request{Init: true}
	tests := []struct {
		name    string
		cfg     ModuleConfig
		cert    []byte
		steps   []Request
		verdict Verdict
		user    string
		groups  []string
	}{
		{name: "password", cfg: ModuleConfig{Chains: []Chain{{Password: users}}},
			steps: []Request{init, answer("username", "alice", "password", "pw-a")}, verdict: Success, user: "alice", groups: []string{"eng", "ops"}},
		{name: "wrong password", cfg: ModuleConfig{Chains: []Chain{{Password: users}}},
			steps: []Request{init, answer("username", "alice", "password", "nope")}, verdict: Failure},
		{name: "certificate only", cfg: ModuleConfig{Chains: []Chain{{Cert: certMethod}}}, cert: certDER(t, "alice"),
			steps: []Request{init}, verdict: Success, user: "alice"},
		{name: "certificate required, none given", cfg: ModuleConfig{Chains: []Chain{{Cert: certMethod, Password: users}}},
			steps: []Request{init}, verdict: Refused},
		{name: "certificate and password", cfg: ModuleConfig{Chains: []Chain{{Cert: certMethod, Password: users}}}, cert: certDER(t, "alice"),
			steps: []Request{init, answer("username", "alice", "password", "pw-a")}, verdict: Success, user: "alice", groups: []string{"eng", "ops"}},
		{name: "certificate and password, user from the certificate", cfg: ModuleConfig{Chains: []Chain{{Cert: certMethod, Password: users}}},
			cert: certDER(t, "alice"), steps: []Request{init, answer("password", "pw-a")}, verdict: Success, user: "alice", groups: []string{"eng", "ops"}},
		{name: "alice's certificate, bob's password", cfg: ModuleConfig{Chains: []Chain{{Cert: certMethod, Password: users}}},
			cert: certDER(t, "alice"), steps: []Request{init, answer("username", "bob", "password", "pw-b")}, verdict: Refused},
		{name: "enable_auth certificate", cfg: ModuleConfig{Chains: []Chain{{Password: users}, {Cert: certMethod}}}, cert: certDER(t, "bob"),
			steps: []Request{init}, verdict: Success, user: "bob"},
		{name: "enable_auth, no certificate: password", cfg: ModuleConfig{Chains: []Chain{{Password: users}, {Cert: certMethod}}},
			steps: []Request{init, answer("username", "bob", "password", "pw-b")}, verdict: Success, user: "bob"},
		{name: "group chosen", cfg: ModuleConfig{Chains: []Chain{{Password: users}}, Groups: GroupConfig{Select: []GroupOption{{"ops", "Operations"}}}},
			steps: []Request{init, {Init: true, Group: "ops"}, answer("username", "alice", "password", "pw-a")}, verdict: Success, user: "alice", groups: []string{"ops", "eng"}},
		{name: "foreign group", cfg: ModuleConfig{Chains: []Chain{{Password: users}}, Groups: GroupConfig{Select: []GroupOption{{"ops", "ops"}}}},
			steps: []Request{init, {Init: true, Group: "ops"}, answer("username", "bob", "password", "pw-b")}, verdict: Refused},
		{name: "default group", cfg: ModuleConfig{Chains: []Chain{{Password: users}}, Groups: GroupConfig{Default: "DEFAULT"}},
			steps: []Request{init, {Init: true, Group: "DEFAULT"}, answer("username", "bob", "password", "pw-b")}, verdict: Success, user: "bob"},
		{name: "certificate groups", cfg: ModuleConfig{Chains: []Chain{{Cert: &CertMethod{GroupOID: "2.5.4.11"}}}}, cert: certDER(t, "carol", "red", "blue"),
			steps: []Request{init, {Init: true, Group: "blue"}}, verdict: Success, user: "carol", groups: []string{"blue", "red"}},
		{name: "certificate groups, foreign", cfg: ModuleConfig{Chains: []Chain{{Cert: &CertMethod{GroupOID: "2.5.4.11"}}}}, cert: certDER(t, "carol", "red", "blue"),
			steps: []Request{init, {Init: true, Group: "green"}}, verdict: Refused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewModule(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := run(t, m, tc.cert, tc.steps...)
			if r.Verdict != tc.verdict {
				t.Fatalf("verdict %d (%s), want %d", r.Verdict, r.Reason, tc.verdict)
			}
			if tc.verdict == Success && (r.Identity.User != tc.user || !slices.Equal(r.Identity.Groups, tc.groups)) {
				t.Fatalf("identity %+v, want %s %v", r.Identity, tc.user, tc.groups)
			}
			if tc.verdict == Success && r.Identity.Certificate != (tc.cert != nil) {
				t.Fatalf("identity bound to the certificate: %v, want %v", r.Identity.Certificate, tc.cert != nil)
			}
			if (r.Verdict == Success || r.Verdict == Refused) && len(m.logins) != 0 {
				t.Fatalf("%d logins kept after the verdict", len(m.logins))
			}
		})
	}
}

// The first form offers the groups, preselecting the one chosen.
func TestGroupForm(t *testing.T) {
	m, _ := NewModule(ModuleConfig{Chains: []Chain{{Password: users}}, Groups: GroupConfig{
		Default: "DEFAULT", Select: []GroupOption{{"eng", "Engineering"}}, Auto: func() []string { return []string{"eng", "ops"} }}})
	r := m.Step(context.Background(), Request{Init: true, Group: "ops"})
	want := []GroupOption{{"DEFAULT", "DEFAULT"}, {"eng", "Engineering"}, {"ops", "ops"}}
	if r.Verdict != Continue || !slices.Equal(r.Form.Groups, want) || r.Form.Group != "ops" {
		t.Fatalf("%+v", r.Form)
	}
}

func TestCertIdentity(t *testing.T) {
	der := certDER(t, "alice", "eng")
	for oid, want := range map[string]string{"": "alice", OIDCommonName: "alice", OIDUID: "uid-alice", "san(rfc822name)": "alice@example.com", "2.5.4.10": ""} {
		id, err := (&CertMethod{UserOID: oid, GroupOID: "2.5.4.11"}).Identity(der)
		if want == "" {
			if err == nil {
				t.Errorf("%q: %+v, want an error", oid, id)
			}
			continue
		}
		if err != nil || id.User != want || !slices.Equal(id.Groups, []string{"eng"}) {
			t.Errorf("%q: %+v, %v; want %s [eng]", oid, id, err, want)
		}
	}
}

const otpKeyHex = "3132333435363738393031323334353637383930" // RFC 4226's test key

func otpCode(t testing.TB, counter int64, digits int) string {
	t.Helper()
	// base32 of "12345678901234567890"
	c, err := hotp.GenerateCodeCustom("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", uint64(counter), hotp.ValidateOpts{Digits: otp.Digits(digits), Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOTPFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.oath")
	os.WriteFile(path, []byte("# tokens\nHOTP/T30 alice - "+otpKeyHex+"\nHOTP bob - "+otpKeyHex+" 4 000000 2020-01-01T00:00:00L\nHOTP/T60/8 carol 12 "+otpKeyHex+"\n"), 0o640)
	f, err := OpenOTPFile(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	f.now = func() time.Time { return now }
	step := now.Unix() / 30
	t.Run("TOTP", func(t *testing.T) {
		if err := f.Verify("alice", otpCode(t, step-2, 6)); err != ErrBadCredentials {
			t.Fatalf("two steps old: %v", err)
		}
		if err := f.Verify("alice", otpCode(t, step-1, 6)); err != nil {
			t.Fatalf("one step old: %v", err)
		}
		if err := f.Verify("alice", otpCode(t, step-1, 6)); err != ErrReplayed {
			t.Fatalf("replayed: %v", err)
		}
		if err := f.Verify("alice", otpCode(t, step+1, 6)); err != nil {
			t.Fatalf("one step ahead: %v", err)
		}
		if err := f.Verify("alice", otpCode(t, step, 6)); err != ErrReplayed {
			t.Fatalf("a step before the last used: %v", err)
		}
	})
	t.Run("HOTP", func(t *testing.T) {
		if err := f.Verify("bob", otpCode(t, 4, 6)); err != ErrReplayed {
			t.Fatalf("the last used: %v", err)
		}
		if err := f.Verify("bob", otpCode(t, 7, 6)); err != nil {
			t.Fatalf("ahead within the window: %v", err)
		}
		if err := f.Verify("bob", otpCode(t, 6, 6)); err != ErrBadCredentials {
			t.Fatalf("behind the last used: %v", err)
		}
		if err := f.Verify("bob", otpCode(t, 7+hotpWindow+1, 6)); err != ErrBadCredentials {
			t.Fatalf("beyond the window: %v", err)
		}
	})
	t.Run("PIN and digits", func(t *testing.T) {
		c := otpCode(t, now.Unix()/60, 8)
		if err := f.Verify("carol", c); err != ErrBadCredentials {
			t.Fatalf("without the PIN: %v", err)
		}
		if err := f.Verify("carol", "12"+c); err != nil {
			t.Fatalf("PIN and code: %v", err)
		}
	})
	if err := f.Verify("nobody", "123456"); err != ErrBadCredentials {
		t.Fatalf("unknown user: %v", err)
	}
	data, _ := os.ReadFile(path)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after the write-back", fi.Mode())
	}
	if !strings.HasPrefix(string(data), "# tokens\n") || !strings.Contains(string(data), "HOTP bob - "+otpKeyHex+" 7 ") {
		t.Fatalf("state not written back:\n%s", data)
	}
	if _, err := ParseOTPFile(data); err != nil {
		t.Fatalf("the written file does not parse: %v", err)
	}
}

// Password then one-time password through the module; a wrong code starts over at the password.
func TestLoginWithOTP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.oath")
	os.WriteFile(path, []byte("HOTP alice - "+otpKeyHex+"\n"), 0o600)
	f, err := OpenOTPFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewModule(ModuleConfig{Chains: []Chain{{Password: users, OTP: f}}})
	r := run(t, m, nil, Request{Init: true}, answer("username", "alice", "password", "pw-a"))
	if r.Verdict != Continue || r.Form.ID != "challenge" {
		t.Fatalf("after the password: %+v", r)
	}
	r = m.Step(context.Background(), Request{LoginID: r.LoginID, Answers: map[string]string{"secondary_password": "000000"}})
	if r.Verdict != Failure || r.Form.ID != "main" {
		t.Fatalf("wrong code: %+v", r)
	}
	r = run(t, m, nil, Request{Init: true}, answer("username", "alice", "password", "pw-a"), answer("secondary_password", otpCode(t, 0, 6)))
	if r.Verdict != Success || r.Identity.User != "alice" {
		t.Fatalf("right code: %+v", r)
	}
}

func FuzzParseOTPFile(f *testing.F) {
	f.Add([]byte("HOTP/T30 alice - " + otpKeyHex + "\n"))
	f.Add([]byte("HOTP/E/8 bob 1234 " + otpKeyHex + " 12 12345678 2020-01-01T00:00:00L\n# c\n"))
	f.Add([]byte("HOTP/T60/7 x + ab\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseOTPFile(data)
		if err == nil && len(users) > strings.Count(string(data), "\n")+1 {
			t.Fatalf("%d users from %d lines", len(users), strings.Count(string(data), "\n")+1)
		}
	})
}
