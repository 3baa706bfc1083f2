package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Debian's ocserv.conf converts to a TOML file that loads without errors, with its settings, and the report names
// every active line of the file once (carried or left out) and the two differences.
func TestImportDebian(t *testing.T) {
	data, err := os.ReadFile("testdata/debian-ocserv.conf")
	if err != nil {
		t.Fatal(err)
	}
	im, err := Import(data, "ocserv.conf", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(im.TOML, "/etc/ocgate/ocgate.toml")
	if err != nil {
		t.Fatalf("%v\n%s", err, im.TOML)
	}
	if c.TCPPort != 443 || c.UDPPort != 443 || c.MaxClients != 16 || c.IPv4Network.String() != "192.168.1.0/24" ||
		len(c.Routes) != 3 || c.PlainPasswd() != "/etc/ocserv/passwd" || c.DefaultDomain != "example.com" ||
		len(c.DNS) != 0 || c.RunAsUser != "ocserv" || c.BanTime.Seconds() != 300 {
		t.Fatalf("imported configuration %+v", c)
	}
	lines, _ := parseOcserv(data)
	keys := map[string]bool{}
	for _, l := range lines {
		keys[l.key] = true
	}
	if got := len(im.Carried) + len(im.Ignored); got != len(keys) || len(lines) != 43 {
		t.Errorf("report names %d keys, the file has %d keys on %d lines:\n%s", got, len(keys), len(lines), im.Report())
	}
	rep := im.Report()
	for _, want := range []string{
		`93: tcp_port: 443 (ocserv's tcp-port)`,
		`180: isolate_workers: true (ocserv's isolate-workers)`,
		`set datapath = "tun" to keep ocserv's behaviour`,
		`512: dns: 192.168.1.1 is the server's own address in the pool`,
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

// The tricky parts of ocserv's syntax: quoting, comments, repeated keys, booleans, sections, the legacy auth form,
// unknown keys and bad values.
func TestImportSyntax(t *testing.T) {
	in := "\uFEFF# comment\n" +
		"  ; another comment\n" +
		"auth = \"plain[/etc/ocserv/ocpasswd]\"\n" +
		"banner = \"Welcome, \"friend\"\"  \n" +
		"pre-login-banner = a \\ b # not a comment\n" +
		"route = 10.0.0.0/255.0.0.0\r\n" +
		"route=default\n" +
		"no-route = \"192.168.5.0/24\"\n" +
		"tcp-port = 443\n" +
		"tcp-port = 4443\n" +
		"deny-roaming = yes\n" +
		"persistent-cookies = NO\n" +
		"max-clients = lots\n" +
		"use-dbus = true\n" +
		"frobnicate = 1\n" +
		"iroute = 10.9.0.0/16\n" +
		"[vhost:www.example.com]\n" +
		"tcp-port = 1\n" +
		"route = 1.2.3.0/24\n"
	im, err := Import([]byte(in), "o.conf", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(im.TOML, "o.toml")
	if err != nil {
		t.Fatalf("%v\n%s", err, im.TOML)
	}
	if c.PlainPasswd() != "/etc/ocserv/ocpasswd" || c.Banner != "Welcome, \"friend" ||
		c.PreLoginBanner != `a \ b # not a comment` || len(c.Routes) != 3 || len(c.NoRoutes) != 1 ||
		c.TCPPort != 4443 || !c.DenyRoaming || c.PersistentCookies || c.MaxClients != 1024 {
		t.Fatalf("%+v\n%s", c, im.TOML)
	}
	rep := im.Report()
	for _, want := range []string{
		"tcp_port: set 2 times; ocserv and ocgate take the last value",
		`max_clients: "lots" is not a whole number`,
		"frobnicate: unknown to ocgate",
		"use_dbus: ",
		"iroute: only allowed in per-user and per-group files",
		"[vhost:www.example.com]: sections (virtual hosts) are not supported",
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
	if strings.Contains(rep, "1.2.3.0") {
		t.Errorf("a vhost's key was carried:\n%s", rep)
	}
	if _, err := Import([]byte("route 10.0.0.0/8\n"), "o.conf", ImportOptions{}); err == nil ||
		!strings.Contains(err.Error(), "o.conf:1: ") {
		t.Fatalf("a line without '=': %v", err)
	}
}

// config-per-user and config-per-group are converted into the directories given, and left out without them.
func TestImportUserDirs(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "users"), 0o755)
	os.MkdirAll(filepath.Join(src, "groups"), 0o755)
	os.WriteFile(filepath.Join(src, "users", "alice"), []byte("route = 10.5.0.0/16\nroute = 10.6.0.0/16\n"+
		"explicit-ipv4 = 10.250.77.9\ntcp-port = 1\n"), 0o644)
	os.WriteFile(filepath.Join(src, "groups", "staff"), []byte("dns = 10.1.1.1\n"), 0o644)
	os.WriteFile(filepath.Join(src, "default"), []byte("idle-timeout = 60\n"), 0o644)
	conf := "config-per-user = " + filepath.Join(src, "users") + "/\nconfig-per-group = " + filepath.Join(src, "groups") +
		"\ndefault-user-config = " + filepath.Join(src, "default") + "\n"

	im, err := Import([]byte(conf), "o.conf", ImportOptions{})
	if err != nil || len(im.Files) != 0 || !strings.Contains(im.Report(), "run the import with --user-dir DIR") {
		t.Fatalf("without directories: %v %q\n%s", err, im.Files, im.Report())
	}

	out := t.TempDir()
	im, err = Import([]byte(conf), "o.conf", ImportOptions{UserDir: filepath.Join(out, "u"), GroupDir: filepath.Join(out, "g")})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range im.Files {
		os.MkdirAll(filepath.Dir(name), 0o755)
		os.WriteFile(name, data, 0o644)
	}
	c, err := Parse(im.TOML, filepath.Join(out, "o.toml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, im.TOML)
	}
	if w, errs := c.CheckUserConfigs(); len(errs) != 0 || len(w) != 0 {
		t.Fatalf("converted files: %q %v", w, errs)
	}
	u, err := c.UserConfig("alice", []string{"staff"})
	if err != nil || len(u.Routes) != 2 || len(u.DNS) != 1 || u.ExplicitIPv4.String() != "10.250.77.9" {
		t.Fatalf("alice: %+v %v", u, err)
	}
	if u, err := c.UserConfig("bob", nil); err != nil || u.IdleTimeout.Seconds() != 60 {
		t.Fatalf("bob (default_user_config): %+v %v", u, err)
	}
	if !strings.Contains(im.Report(), "alice:4: tcp_port: not allowed in a per-user or per-group file") {
		t.Fatalf("report:\n%s", im.Report())
	}
}

// ocgate's TOML takes ocserv's value syntaxes where they are unambiguous, and explains the others with the
// quoted form.
func TestOcservSyntaxInTOML(t *testing.T) {
	tests := []struct{ name, in, err string }{
		{"single string for a list", "route = \"10.0.0.0/8\"\nauth = \"plain[passwd=/p]\"\n", ""},
		{"legacy plain", "auth = [\"plain[/p]\"]\n", ""},
		{"unquoted route", "tcp_port = 443\nroute = 10.0.0.0/8\n", `f.toml:2: route: the value must be quoted in TOML: route = "10.0.0.0/8"`},
		{"unquoted word", "run_as_user = ocserv\n", `f.toml:1: run_as_user: the value must be quoted in TOML: run_as_user = "ocserv"`},
		{"key twice", "route = \"10.0.0.0/8\"\nroute = \"10.1.0.0/16\"\n",
			`f.toml:2: route: set on lines 1, 2; TOML takes the values as one list: route = ["10.0.0.0/8", "10.1.0.0/16"]`},
		{"ocserv file", "# x\ntcp-port = 443\n", "f.toml:2: this is ocserv's format"},
		{"ocserv file that is TOML", "tcp-port = 443\nmax-clients = 5\n", "f.toml:1: this is ocserv's format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "f.toml")
			if tc.err == "" {
				if err != nil || c.PlainPasswd() == "" && len(c.Routes) == 0 {
					t.Fatalf("%+v %v", c, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// The ocserv-format reader never panics; every line it returns has a key and a line number within the file,
// and Import of what it reads either fails naming the file and a line, or writes TOML that decodes.
func FuzzParseOcserv(f *testing.F) {
	if data, err := os.ReadFile("testdata/debian-ocserv.conf"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("auth = \"plain[/p]\"\nroute = a\nroute = b\n[vhost:x]\ntcp-port = 1\n"))
	errLine := regexp.MustCompile(`^fuzz\.conf:\d+: `)
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, errs := parseOcserv(in)
		n := strings.Count(string(in), "\n") + 1
		for _, l := range lines {
			if l.key == "" || l.line < 1 || l.line > n {
				t.Fatalf("line %+v of %d", l, n)
			}
		}
		im, err := Import(in, "fuzz.conf", ImportOptions{})
		if len(errs) > 0 {
			if err == nil || !errLine.MatchString(err.Error()) {
				t.Fatalf("unreadable lines %v, import error %v", errs, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := newParser("fuzz.toml", "", im.TOML)
		if _, err := p.decode(im.TOML); err != nil {
			t.Fatalf("the TOML does not decode: %v\n%s", err, im.TOML)
		}
	})
}

// run_as_user naming root (or the running user) drops nothing: accepted with a warning and cleared, as ocserv
// accepts it.
func TestRunAsRoot(t *testing.T) {
	c, err := Parse([]byte("run_as_user = \"root\"\n"), "f.toml")
	if err != nil || c.RunAsUser != "" || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "f.toml:1: run_as_user: \"root\" (uid 0) drops no privileges") {
		t.Fatalf("%q %q %v", c.RunAsUser, c.Warnings, err)
	}
}
