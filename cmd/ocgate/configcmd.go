package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/pflag"

	"ocgate/config"
)

const configUsage = "usage: ocgate config check FILE | ocgate config defaults |\n" +
	"       ocgate config import OCSERV.CONF [-o OUT.toml] [--user-dir DIR] [--group-dir DIR]"

// runConfig implements `ocgate config check FILE`, `ocgate config defaults` and `ocgate config import`. Returns
// the exit status.
func runConfig(args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, configUsage)
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "defaults":
		if len(args) != 1 {
			return usage()
		}
		fmt.Fprint(stdout, config.DefaultsTOML())
		return 0
	case "check":
		if len(args) != 2 {
			return usage()
		}
		if checkConfig(args[1], stderr) != nil {
			return 1
		}
		fmt.Fprintf(stdout, "%s: OK\n", args[1])
		return 0
	case "import":
		return runImport(args[1:], stdout, stderr)
	}
	return usage()
}

// checkConfig loads a configuration and every per-user and per-group file it names, printing the warnings and
// errors; it returns an error when something does not load.
func checkConfig(path string, stderr io.Writer) error {
	c, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return err
	}
	for _, w := range c.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	// The per-user and per-group files are read at each login; check them all now.
	warns, errs := c.CheckUserConfigs()
	for _, w := range warns {
		fmt.Fprintln(stderr, "warning:", w)
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// runImport converts an ocserv configuration: the TOML goes to -o (standard output without it), the converted
// per-user and per-group files into --user-dir and --group-dir, and the report to standard output (standard error
// when the TOML is written there). With -o, the written file is then checked as `ocgate config check` would.
func runImport(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("import", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.StringP("output", "o", "", "write the TOML to this file (default: standard output)")
	userDir := fs.String("user-dir", "", "convert config-per-user's files into this directory")
	groupDir := fs.String("group-dir", "", "convert config-per-group's files into this directory")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, configUsage)
		return 2
	}
	in := fs.Arg(0)
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
	im, err := config.Import(data, in, config.ImportOptions{UserDir: abs(*userDir), GroupDir: abs(*groupDir)})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	report := stdout
	if *out == "" {
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
	if *out != "" {
		if err := os.WriteFile(*out, im.TOML, 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	fmt.Fprint(report, im.Report())
	for _, name := range names {
		fmt.Fprintf(report, "wrote %s\n", name)
	}
	if *out == "" {
		return 0
	}
	fmt.Fprintf(report, "wrote %s\n", *out)
	if checkConfig(*out, stderr) != nil {
		fmt.Fprintf(stderr, "%s does not load as it is: fix the errors above\n", *out)
		return 1
	}
	fmt.Fprintf(report, "%s: OK\n", *out)
	return 0
}
