package main

// The command line. Every command, its flags, its usage text, `ocgate help` and the shell completions come from
// the table below, so they cannot disagree:
//
//	ocgate [serve] [flags]                                run the server, the default command (main.go)
//	ocgate config check FILE | defaults | import ...      configcmd.go
//	ocgate passwd [-c FILE] [-g GROUPS] [-d|-l|-u] USER   passwd.go
//	ocgate ctl [-s SOCKET] COMMAND...                     ctl.go; also reached as `occtl` (a symlink)
//	ocgate version | completion SHELL | help [COMMAND]    this file
//
// `--help` (or -h) on any command prints its usage on standard output and exits 0. An unknown command, flag or
// operand prints what was wrong and the usage on standard error and exits 2, before anything is opened or started.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"ocgate/egress/privsep"
	"ocgate/egress/secmod"
)

// version is the release: scripts/release.sh stamps it (-ldflags "-X main.version=..."); `ocgate version` adds the
// module version, VCS revision and Go version the go command recorded.
var version = "0.1.0"

// revision is the VCS revision scripts/release.sh stamps (-X main.revision=...), for builds where the go command
// records none (a git worktree, -buildvcs=false).
var revision = ""

// exitUsage is the exit status of a command line that was not understood. A command's run function that returns
// it has printed what was wrong; the command's usage follows on standard error.
const exitUsage = 2

// stdio is a command's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// A command is one leaf of the command tree.
type command struct {
	name    string // the words after "ocgate": "config check"
	args    string // the operands in the usage line: "FILE"
	summary string // one line, for `ocgate help`
	about   func() string
	min     int // operands accepted: at least min
	max     int // and at most max; -1 = any number
	// setup declares the command's flags on fs and returns the function that runs the command with its operands
	// once the flags are parsed; it returns the exit status.
	setup func(fs *pflag.FlagSet) func(io stdio, args []string) int
}

// commands returns the command tree, in the order `ocgate help` lists it. serve is first: it is the default. (A
// function, not a variable: help and completion read the table.)
func commands() []*command {
	return []*command{
		serveCommand,
		{name: "config check", args: "FILE", min: 1, max: 1, setup: configCheckSetup,
			summary: "check a configuration file as the server's start does (files, certificate, key, pool)"},
		{name: "config defaults", setup: configDefaultsSetup,
			summary: "print every configuration key with its default and meaning"},
		{name: "config import", args: "OCSERV.CONF", min: 1, max: 1, setup: configImportSetup,
			summary: "convert an ocserv configuration to ocgate's TOML"},
		passwdCommand,
		ctlCommand,
		{name: "version", setup: func(*pflag.FlagSet) func(stdio, []string) int {
			return func(io stdio, _ []string) int { fmt.Fprint(io.out, versionInfo()); return 0 }
		}, summary: "print the version, VCS revision and Go version"},
		{name: "completion", args: "bash|zsh|fish", min: 1, max: 1, setup: completionSetup,
			summary: "print a shell completion script", about: completionAbout},
		{name: "help", args: "[COMMAND]", max: -1, setup: func(*pflag.FlagSet) func(stdio, []string) int { return runHelp },
			summary: "print the usage of ocgate or of a command"},
	}
}

func main() {
	args := os.Args[1:]
	io := stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}
	if filepath.Base(os.Args[0]) == "occtl" {
		os.Exit(execute(ctlCommand, "occtl", args, io))
	}
	if len(args) > 0 && (args[0] == secmod.MonitorArg || args[0] == secmod.WorkerArg) {
		os.Exit(runSecurityModule(args[0])) // the security module (secmod.go), started by the server itself
	}
	if len(args) > 0 && args[0] == privHelperArg { // the privileged helper (datapath.go), started by the server itself
		log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "privileged-helper")
		if err := privsep.ServeHelper(3, log); err != nil {
			log.Error("exiting", "err", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(args, io))
}

// run runs the command line args (without the program name) and returns the exit status.
func run(args []string, io stdio) int {
	if len(args) > 0 && args[0] == completionArg {
		for _, c := range complete(args[1:]) {
			fmt.Fprintln(io.out, c)
		}
		return 0
	}
	cmd, rest, err := findCommand(args)
	if err != nil {
		fmt.Fprintf(io.err, "ocgate: %v\n\n", err)
		writeUsage(io.err, groupOf(args))
		return exitUsage
	}
	return execute(cmd, "ocgate "+cmd.name, rest, io)
}

// findCommand finds the command args name and returns it with the arguments that follow its name. No command
// word, or a flag first, is serve. A group word alone ("config") or with --help is `help config`.
func findCommand(args []string) (*command, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return serveCommand, args, nil
	}
	group := groupCommands(args[0])
	if len(group) == 0 {
		return nil, nil, fmt.Errorf("unknown command %q", args[0])
	}
	if len(group) == 1 && group[0].name == args[0] {
		return group[0], args[1:], nil
	}
	if len(args) == 1 {
		return nil, nil, fmt.Errorf("%s: a command is missing", args[0])
	}
	if args[1] == "--help" || args[1] == "-h" {
		return lookup("help"), args[:1], nil
	}
	if c := lookup(args[0] + " " + args[1]); c != nil {
		return c, args[2:], nil
	}
	return nil, nil, fmt.Errorf("unknown command %q", args[0]+" "+args[1])
}

// groupCommands returns the commands whose first word is word.
func groupCommands(word string) []*command {
	var out []*command
	for _, c := range commands() {
		if first, _, _ := strings.Cut(c.name, " "); first == word {
			out = append(out, c)
		}
	}
	return out
}

// groupOf is the group args name ("config"), or "" for the whole tree.
func groupOf(args []string) string {
	if len(args) > 0 && len(groupCommands(args[0])) > 1 {
		return args[0]
	}
	return ""
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// newFlagSet returns cmd's flags, and the function that runs it. pflag prints nothing itself: execute does.
func (c *command) newFlagSet(name string, io stdio) (*pflag.FlagSet, func(stdio, []string) int) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {}
	runFn := c.setup(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Value.Type() == "bool" {
			f.Value = plainBool{f.Value} // printed as --json, not --json[=true|false]
		}
	})
	return fs, runFn
}

// plainBool hides IsBoolFlag from pflag's usage text; NoOptDefVal ("true") still makes the value optional.
type plainBool struct{ pflag.Value }

// execute parses args for cmd, shown as name ("ocgate passwd", "occtl"), and runs it.
func execute(cmd *command, name string, args []string, io stdio) int {
	fs, runFn := cmd.newFlagSet(name, io)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			cmd.writeUsage(io.out, name, fs)
			return 0
		}
		fmt.Fprintf(io.err, "%s: %v\n\n", name, err)
		cmd.writeUsage(io.err, name, fs)
		return exitUsage
	}
	ops := fs.Args()
	switch {
	case len(ops) < cmd.min:
		fmt.Fprintf(io.err, "%s: missing %s\n\n", name, cmd.args)
		cmd.writeUsage(io.err, name, fs)
		return exitUsage
	case cmd.max >= 0 && len(ops) > cmd.max:
		fmt.Fprintf(io.err, "%s: unexpected argument %q\n\n", name, ops[cmd.max])
		cmd.writeUsage(io.err, name, fs)
		return exitUsage
	}
	code := runFn(io, ops)
	if code == exitUsage {
		fmt.Fprintln(io.err)
		cmd.writeUsage(io.err, name, fs)
	}
	return code
}

// writeUsage prints the command's usage line, summary, more text and flags.
func (c *command) writeUsage(w io.Writer, name string, fs *pflag.FlagSet) {
	line := name
	if fs.HasFlags() {
		line += " [flags]"
	}
	if c.args != "" {
		line += " " + c.args
	}
	if c == serveCommand && name == "ocgate serve" {
		line = "ocgate [serve] [flags]"
	}
	fmt.Fprintf(w, "usage: %s\n\n%s.\n", line, upperFirst(c.summary))
	if c.about != nil {
		fmt.Fprintf(w, "\n%s", c.about())
	}
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nflags:\n%s", fs.FlagUsages())
	}
	if c == serveCommand {
		fmt.Fprintln(w)
		writeCommandList(w, "")
	}
}

// writeUsage prints the list of commands of group ("" = all), as `ocgate help` does.
func writeUsage(w io.Writer, group string) {
	if group == "" {
		fmt.Fprint(w, "usage: ocgate [serve] [flags]\n       ocgate COMMAND [flags] [ARGS]\n\n")
	} else {
		fmt.Fprintf(w, "usage: ocgate %s COMMAND [flags] [ARGS]\n\n", group)
	}
	writeCommandList(w, group)
}

func writeCommandList(w io.Writer, group string) {
	fmt.Fprintln(w, "commands:")
	width := 0
	var shown []*command
	for _, c := range commands() {
		if first, _, _ := strings.Cut(c.name, " "); group == "" || first == group {
			shown = append(shown, c)
			width = max(width, len(c.name+" "+c.args))
		}
	}
	for _, c := range shown {
		fmt.Fprintf(w, "  %-*s  %s\n", width, strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintln(w, "\n`ocgate help COMMAND` or `ocgate COMMAND --help` prints a command's flags.")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// runHelp is `ocgate help [COMMAND]`.
func runHelp(io stdio, args []string) int {
	if len(args) == 0 {
		writeUsage(io.out, "")
		return 0
	}
	name := strings.Join(args, " ")
	if c := lookup(name); c != nil {
		fs, _ := c.newFlagSet("ocgate "+name, io)
		c.writeUsage(io.out, "ocgate "+name, fs)
		return 0
	}
	if len(args) == 1 && len(groupCommands(args[0])) > 1 {
		writeUsage(io.out, args[0])
		return 0
	}
	fmt.Fprintf(io.err, "ocgate help: unknown command %q\n", name)
	return exitUsage
}

// versionInfo is what `ocgate version` and `ocgate --version` print: the release, then what the go command
// recorded in the binary (module version, VCS revision and time, whether the tree was modified, Go version).
func versionInfo() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ocgate %s\n", version)
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintf(&b, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return b.String()
	}
	fmt.Fprintf(&b, "module: %s %s\n", bi.Main.Path, bi.Main.Version)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["vcs.revision"] == "" {
		settings["vcs.revision"] = revision
	}
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		if t := settings["vcs.time"]; t != "" {
			rev += " " + t
		}
		fmt.Fprintf(&b, "revision: %s\n", rev)
	}
	fmt.Fprintf(&b, "go: %s %s/%s", bi.GoVersion, settings["GOOS"], settings["GOARCH"])
	if cgo := settings["CGO_ENABLED"]; cgo != "" {
		fmt.Fprintf(&b, " CGO_ENABLED=%s", cgo)
	}
	b.WriteString("\n")
	return b.String()
}

// Shell completion: each script calls `ocgate __complete WORDS... CURRENT`, which prints the candidates for
// CURRENT one a line (commands, or flags when CURRENT starts with '-'); nothing means "complete file names".
const completionArg = "__complete"

var completionScripts = map[string]string{
	"bash": `# ocgate completion for bash: source <(ocgate completion bash)
_ocgate() {
	local IFS=$'\n'
	COMPREPLY=($("${COMP_WORDS[0]}" ` + completionArg + ` "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _ocgate ocgate
`,
	"zsh": `#compdef ocgate
# ocgate completion for zsh: source <(ocgate completion zsh), after compinit
_ocgate() {
	local -a c
	c=("${(@f)$("${words[1]}" ` + completionArg + ` "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	if [[ -n "${c[1]}" ]]; then
		compadd -- "${c[@]}"
	else
		_files
	fi
}
compdef _ocgate ocgate
`,
	"fish": `# ocgate completion for fish: ocgate completion fish | source
complete -c ocgate -a '(ocgate ` + completionArg + ` (commandline -opc)[2..-1] (commandline -ct))'
`,
}

func completionAbout() string {
	return "bash: source <(ocgate completion bash)    (or save it in /etc/bash_completion.d/ocgate)\n" +
		"zsh:  source <(ocgate completion zsh)     (after compinit)\n" +
		"fish: ocgate completion fish | source     (or save it in ~/.config/fish/completions/ocgate.fish)\n"
}

func completionSetup(*pflag.FlagSet) func(stdio, []string) int {
	return func(io stdio, args []string) int {
		s, ok := completionScripts[args[0]]
		if !ok {
			fmt.Fprintf(io.err, "ocgate completion: unknown shell %q\n", args[0])
			return exitUsage
		}
		fmt.Fprint(io.out, s)
		return 0
	}
}

// complete returns the candidates for the last of words, the words typed after "ocgate".
func complete(words []string) []string {
	if len(words) == 0 {
		return nil
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	// The command named so far: the longest run of leading words that names one, or a group.
	var cmd *command
	for i := 1; i <= len(before) && i <= 2; i++ {
		if c := lookup(strings.Join(before[:i], " ")); c != nil {
			cmd = c
		}
	}
	var out []string
	add := func(s string) {
		if strings.HasPrefix(s, cur) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if strings.HasPrefix(cur, "-") {
		if cmd == nil && (len(before) == 0 || strings.HasPrefix(before[0], "-")) {
			cmd = serveCommand
		}
		if cmd != nil {
			fs, _ := cmd.newFlagSet("", stdio{in: nil, out: io.Discard, err: io.Discard})
			fs.VisitAll(func(f *pflag.Flag) {
				add("--" + f.Name)
				if f.Shorthand != "" {
					add("-" + f.Shorthand)
				}
			})
		}
		return out
	}
	if cmd != nil {
		if cmd.name == "completion" && len(before) == 1 {
			for _, sh := range []string{"bash", "fish", "zsh"} {
				add(sh)
			}
		}
		if cmd.name == "help" {
			for _, c := range commands() {
				first, _, _ := strings.Cut(c.name, " ")
				add(first)
			}
		}
		return out
	}
	switch len(before) {
	case 0:
		for _, c := range commands() {
			first, _, _ := strings.Cut(c.name, " ")
			add(first)
		}
	case 1:
		for _, c := range groupCommands(before[0]) {
			if _, second, ok := strings.Cut(c.name, " "); ok {
				add(second)
			}
		}
	}
	return out
}
