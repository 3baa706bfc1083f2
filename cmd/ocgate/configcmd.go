package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"ocgate/auth"
	"ocgate/config"
)

// configCheckSetup is `ocgate config check FILE`.
func configCheckSetup(*pflag.FlagSet) func(stdio, []string) int {
	return func(io stdio, args []string) int {
		if checkConfig(args[0], true, io.out, io.err) != nil {
			return 1
		}
		fmt.Fprintf(io.out, "%s: OK\n", args[0])
		return 0
	}
}

// configDefaultsSetup is `ocgate config defaults`; --markdown prints the reference of docs/config.md instead.
//
//go:generate sh -c "go run . config defaults --markdown > ../../docs/config.md"
func configDefaultsSetup(fs *pflag.FlagSet) func(stdio, []string) int {
	markdown := fs.Bool("markdown", false, "print the reference of every key in Markdown (docs/config.md)")
	return func(io stdio, _ []string) int {
		if *markdown {
			fmt.Fprint(io.out, config.ReferenceMarkdown())
			return 0
		}
		fmt.Fprint(io.out, config.DefaultsTOML())
		return 0
	}
}

// checkConfig loads a configuration, every per-user and per-group file it names, and what the server's start
// loads (loadState, as the security module would: certificate and key, password and OTP files, accounting; prepare:
// CA and CRL, address pools), printing the warnings in line order and the errors; it returns an error when something
// does not load. Nothing is generated: what the server would generate in its state directory is only reported.
// Without files, only the configuration files are checked (`config import`: the files they name belong to the
// server the configuration is for).
func checkConfig(path string, files bool, stdout, stderr io.Writer) error {
	c, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return err
	}
	// The per-user and per-group files are read at each login; check them all now.
	warns, errs := c.CheckUserConfigs()
	for _, w := range sortByLine(append(slices.Clone(c.Warnings), warns...)) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	if !files {
		return nil
	}
	// What the security module's worker loads (loadState), here in this process: it serves nothing.
	ld, err := loadState(c, "", true)
	if err == nil {
		_, err = prepare(c, &tls.Config{}, &auth.Revocations{})
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return err
	}
	for _, g := range ld.st.generated {
		fmt.Fprintf(stdout, "note: the server generates %s in its state directory\n", g)
	}
	return nil
}

// sortByLine orders "FILE:LINE: ..." messages by file, then line (numerically); others keep their place at the end.
func sortByLine(msgs []string) []string {
	type pos struct {
		file string
		line int
	}
	at := func(m string) pos {
		file, rest, ok := strings.Cut(m, ":")
		n, _, ok2 := strings.Cut(rest, ":")
		line, err := strconv.Atoi(n)
		if !ok || !ok2 || err != nil {
			return pos{"\xff", 0}
		}
		return pos{file, line}
	}
	slices.SortStableFunc(msgs, func(a, b string) int {
		pa, pb := at(a), at(b)
		if c := strings.Compare(pa.file, pb.file); c != 0 {
			return c
		}
		return pa.line - pb.line
	})
	return msgs
}

// configImportSetup is `ocgate config import`: it converts an ocserv configuration. The TOML goes to -o (standard
// output without it), the converted per-user and per-group files into --user-dir and --group-dir, and the report to
// standard output (standard error when the TOML is written there). With -o, the written file is then checked as
// `ocgate config check` would, except for the files it names (they are the server's, maybe on another host).
func configImportSetup(fs *pflag.FlagSet) func(stdio, []string) int {
	out := fs.StringP("output", "o", "", "write the TOML to this file (default: standard output)")
	userDir := fs.String("user-dir", "", "convert config-per-user's files into this directory")
	groupDir := fs.String("group-dir", "", "convert config-per-group's files into this directory")
	return func(io stdio, args []string) int {
		return runImport(args[0], *out, *userDir, *groupDir, io.out, io.err)
	}
}

func runImport(in, out, userDir, groupDir string, stdout, stderr io.Writer) int {
	data, err := os.ReadFile(in)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	im, err := config.Import(data, in, config.ImportOptions{UserDir: abs(userDir), GroupDir: abs(groupDir)})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	report := stdout
	if out == "" {
		stdout.Write(im.TOML)
		report = stderr
	}
	names := make([]string, 0, len(im.Files))
	for name := range im.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := os.WriteFile(name, im.Files[name], 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	if out != "" {
		if err := os.WriteFile(out, im.TOML, 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	fmt.Fprint(report, im.Report())
	for _, name := range names {
		fmt.Fprintf(report, "wrote %s\n", name)
	}
	if out == "" {
		return 0
	}
	fmt.Fprintf(report, "wrote %s\n", out)
	if checkConfig(out, false, report, stderr) != nil {
		fmt.Fprintf(stderr, "%s does not load as it is: fix the errors above\n", out)
		return 1
	}
	fmt.Fprintf(report, "%s: OK\n", out)
	return 0
}
