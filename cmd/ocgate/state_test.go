package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ocgate/config"
	"ocgate/egress/secmod"
)

// testFiles writes a certificate and key pair, a second key, and a password file into a new directory.
func testFiles(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	if err := ensureSelfSigned(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := ensureSelfSigned(filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"passwd", "-c", filepath.Join(dir, "users.passwd"), "alice"},
		stdio{in: strings.NewReader("pw\n"), out: &bytes.Buffer{}, err: &bytes.Buffer{}}); code != 0 {
		t.Fatal("ocgate passwd failed")
	}
	return dir
}

// `config check` refuses what the server's start refuses: the files a configuration names are loaded.
func TestConfigCheckLoadsFiles(t *testing.T) {
	dir := testFiles(t)
	const complete = "server_cert = \"cert.pem\"\nserver_key = \"key.pem\"\nauth = [\"plain[passwd=users.passwd]\"]\n"
	for _, tc := range []struct {
		name, config string
		code         int
		out, err     string
	}{
		{name: "complete", config: complete, out: ": OK"},
		{name: "defaults: generated files are noted", config: "", out: "note: the server generates a self-signed certificate"},
		{name: "server_cert without server_key", config: "server_cert = \"cert.pem\"\n", code: 1,
			err: "server_cert and server_key must be set together"},
		{name: "a missing key file", config: strings.Replace(complete, "key.pem", "missing-key.pem", 1), code: 1,
			err: "missing-key.pem: no such file"},
		{name: "a key that is not the certificate's", config: strings.Replace(complete, "key.pem", "other-key.pem", 1), code: 1,
			err: "private key does not match public key"},
		{name: "a missing password file", config: strings.Replace(complete, "users.passwd", "missing.passwd", 1), code: 1,
			err: "missing.passwd"},
		{name: "a pool that is not one", config: complete + "ipv4_network = \"10.0.0.1/32\"\n", code: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run([]string{"config", "check", path}, stdio{out: &out, err: &errb})
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errb.String())
			}
		})
	}
}

// A configuration that names its certificate, key and password file never touches the state directory; one that
// needs it, where it cannot be created, is told which keys would avoid it.
func TestStateDirOnlyWhenNeeded(t *testing.T) {
	dir := testFiles(t)
	// A directory below a regular file cannot be created, not even by root.
	unwritable := filepath.Join(dir, "users.passwd", "state")
	for _, tc := range []struct {
		name, config, err string
	}{
		{name: "complete", config: "server_cert = \"cert.pem\"\nserver_key = \"key.pem\"\nauth = [\"plain[passwd=users.passwd]\"]\n"},
		{name: "no certificate", config: "auth = [\"plain[passwd=users.passwd]\"]\n", err: "set server_cert and server_key"},
		{name: "no auth", config: "server_cert = \"cert.pem\"\nserver_key = \"key.pem\"\n", err: "set auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.config), filepath.Join(dir, "ocgate.toml"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = prepareState(unwritable, cfg, false)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("prepareState: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

// The banner prints the generated password only while it is the user's: after `ocgate passwd` changed it, a
// restart says so and prints no stale secret.
func TestPrintedPasswordIsCurrent(t *testing.T) {
	stateDir := t.TempDir()
	cfg := config.Default()
	banner := func() (string, *state) {
		st, err := prepareState(stateDir, cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		// What the network process knows: the security module's Hello.
		pub, err := publicStateOf(secmod.Hello{Chain: st.chain, Public: st.public()})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		printHowToConnect(&b, "127.0.0.1:8443", cfg, pub)
		return b.String(), st
	}
	first, st := banner()
	pw := st.initialPassword
	if pw == "" || !strings.Contains(first, "Password: "+pw+"\n") {
		t.Fatalf("first start, no password printed:\n%s", first)
	}
	if again, _ := banner(); !strings.Contains(again, "Password: "+pw+"\n") {
		t.Fatalf("restart, the same password not printed:\n%s", again)
	}
	if code := run([]string{"passwd", "-c", filepath.Join(stateDir, usersFile), initialUser},
		stdio{in: strings.NewReader("changed\n"), out: &bytes.Buffer{}, err: &bytes.Buffer{}}); code != 0 {
		t.Fatal("ocgate passwd failed")
	}
	changed, st := banner()
	if strings.Contains(changed, pw) || strings.Contains(changed, "Password:") || !st.passwordChanged ||
		!strings.Contains(changed, "changed since") {
		t.Fatalf("after ocgate passwd:\n%s", changed)
	}
}
