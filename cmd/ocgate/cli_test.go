package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// Each command line is understood or refused before anything starts: help goes to standard output with status 0,
// a usage error to standard error with status 2 and the usage.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		out, err   string // substrings of standard output and standard error
		noOut      bool   // standard output must stay empty
		notInUsage string // text the usage must not contain
	}{
		{name: "help lists every command", args: []string{"help"}, out: "config defaults",
			notInUsage: "[=true|false]"},
		{name: "--help is serve's usage and the commands", args: []string{"--help"}, out: "passwd USER",
			notInUsage: "[=true|false]"},
		{name: "version", args: []string{"version"}, out: "ocgate " + version + "\n"},
		{name: "--version", args: []string{"--version"}, out: "go: go1."},
		{name: "an unknown command", args: []string{"bogus"}, code: 2, err: `unknown command "bogus"`, noOut: true},
		{name: "serve with an operand", args: []string{"serve", "extra"}, code: 2, err: `unexpected argument "extra"`, noOut: true},
		{name: "an unknown flag", args: []string{"--bogus"}, code: 2, err: "unknown flag: --bogus", noOut: true},
		{name: "config alone", args: []string{"config"}, code: 2, err: "config check FILE", noOut: true},
		{name: "config --help", args: []string{"config", "--help"}, out: "config import OCSERV.CONF"},
		{name: "config check --help", args: []string{"config", "check", "--help"}, out: "usage: ocgate config check FILE"},
		{name: "config check without a file", args: []string{"config", "check"}, code: 2, err: "missing FILE"},
		{name: "passwd with two actions", args: []string{"passwd", "-d", "-l", "alice"}, code: 2, err: "exclude each other"},
		{name: "passwd --help", args: []string{"passwd", "--help"}, out: "--lock "},
		{name: "ctl --help lists occtl's commands", args: []string{"ctl", "--help"}, out: "show users"},
		{name: "help of a command", args: []string{"help", "config", "import"}, out: "--user-dir"},
		{name: "completion of an unknown shell", args: []string{"completion", "tcsh"}, code: 2, err: `unknown shell "tcsh"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, stdio{in: strings.NewReader(""), out: &out, err: &errb})
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) ||
				tc.noOut && out.Len() > 0 {
				t.Fatalf("ocgate %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, out.String(), errb.String())
			}
			if tc.notInUsage != "" && strings.Contains(out.String()+errb.String(), tc.notInUsage) {
				t.Fatalf("the usage contains %q:\n%s", tc.notInUsage, out.String())
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{""}, []string{"serve", "config", "passwd", "ctl", "version", "completion", "help"}},
		{[]string{"con"}, []string{"config"}},
		{[]string{"config", ""}, []string{"check", "defaults", "import"}},
		{[]string{"config", "import", "--u"}, []string{"--user-dir"}},
		{[]string{"--st"}, []string{"--state-dir"}},
		{[]string{"completion", ""}, []string{"bash", "fish", "zsh"}},
		{[]string{"config", "check", ""}, nil}, // file names: the shell's own completion
	} {
		t.Run(strings.Join(tc.words, " "), func(t *testing.T) {
			if got := complete(tc.words); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("complete(%q) = %q, want %q", tc.words, got, tc.want)
			}
		})
	}
	for shell := range completionScripts {
		t.Run(shell+" script", func(t *testing.T) {
			var out bytes.Buffer
			if code := run([]string{"completion", shell}, stdio{out: &out, err: &out}); code != 0 || !strings.Contains(out.String(), completionArg) {
				t.Fatalf("exit %d: %s", code, out.String())
			}
			if shell != "bash" {
				return
			}
			if _, err := exec.LookPath("bash"); err != nil {
				t.Skip("no bash")
			}
			if b, err := exec.Command("bash", "-n", "-c", out.String()).CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, b)
			}
		})
	}
}
