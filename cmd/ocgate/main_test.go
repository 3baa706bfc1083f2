package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("tcp_port = 443\n\nroute = [\"10.0.0.0/33\"]\nbogus = 1\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", bad}, stdio{out: &out, err: &errb}); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{bad + ":3: route:", bad + ":4: bogus: unknown key"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q lacks %q", errb.String(), want)
		}
	}
	good := filepath.Join(dir, "good.toml")
	out.Reset()
	errb.Reset()
	run([]string{"config", "defaults"}, stdio{out: &out, err: &errb})
	os.WriteFile(good, append(out.Bytes(), "sec_mod_scale = 2\n"...), 0o644)
	out.Reset()
	if code := run([]string{"config", "check", good}, stdio{out: &out, err: &errb}); code != 0 || !strings.Contains(out.String(), "OK") ||
		!strings.Contains(errb.String(), "sec_mod_scale: ignored") {
		t.Fatalf("defaults + an ocserv key: exit %d, %q %q", code, out.String(), errb.String())
	}
	if code := run([]string{"config", "frobnicate"}, stdio{out: &out, err: &errb}); code != 2 {
		t.Fatalf("usage error: exit %d", code)
	}
}

func TestPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p")
	var out, errb bytes.Buffer
	if code := run([]string{"passwd", "-c", file, "-g", "a,b", "alice"}, stdio{in: strings.NewReader("pw\npw\n"), out: &out, err: &errb}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if code := run([]string{"passwd", "-c", file, "bob"}, stdio{in: strings.NewReader("pw\nother\n"), out: &out, err: &errb}); code != 1 ||
		!strings.Contains(errb.String(), "do not match") {
		t.Fatalf("mismatch: exit %d %q", code, errb.String())
	}
	if code := run([]string{"passwd", "-c", file, "-l", "alice"}, stdio{in: nil, out: &out, err: &errb}); code != 0 {
		t.Fatalf("lock: exit %d", code)
	}
	b, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(b), "alice:a,b:!$5$") || strings.Contains(string(b), "bob") {
		t.Fatalf("file: %q", b)
	}
}

// `ocgate config import` writes the TOML and the report, and checks the file it wrote; `config check` on the
// ocserv file names the format.
func TestConfigImport(t *testing.T) {
	out := filepath.Join(t.TempDir(), "o.toml")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "import", "../../config/testdata/debian-ocserv.conf", "-o", out}, stdio{out: &stdout, err: &stderr}); code != 0 ||
		!strings.Contains(stdout.String(), "carried over (30)") || !strings.Contains(stdout.String(), out+": OK") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"config", "check", "../../config/testdata/debian-ocserv.conf"}, stdio{out: &stdout, err: &stderr}); code != 1 ||
		!strings.Contains(stderr.String(), "this is ocserv's format") {
		t.Fatalf("check: exit %d %q", code, stderr.String())
	}
}

// docs/config.md is what `ocgate config defaults --markdown` prints today (go generate ./cmd/ocgate rewrites it).
func TestConfigReferenceCurrent(t *testing.T) {
	committed, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"config", "defaults", "--markdown"}, stdio{out: &out, err: &out}); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if out.String() != string(committed) {
		t.Fatal("docs/config.md is stale: run go generate ./cmd/ocgate")
	}
	for _, key := range []string{"### server_cert", "### egress_allow", "### route", "`sec_mod_scale`"} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("the reference lacks %s", key)
		}
	}
}
