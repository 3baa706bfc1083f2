package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"ocgate/auth"
)

// passwdCommand is `ocgate passwd [-c FILE] [-g GROUPS] [-d|-l|-u] USER`, like ocpasswd.
var passwdCommand = &command{name: "passwd", args: "USER", min: 1, max: 1, setup: passwdSetup,
	summary: "set, delete, lock or unlock a user of a password file, like ocpasswd",
	about: func() string {
		return "Without -d, -l or -u, sets USER's password: asked twice on a terminal, else read from standard input\n" +
			"(one line, or two that must match). The file's format is ocpasswd's (user:groups:hash).\n"
	}}

func passwdSetup(fs *pflag.FlagSet) func(stdio, []string) int {
	file := fs.StringP("passwd", "c", filepath.Join(stateDirDefault(), usersFile), "password file (created when missing)")
	groups := fs.StringP("groups", "g", "", "comma-separated groups of the user (without -g an existing user keeps its groups)")
	del := fs.BoolP("delete", "d", false, "delete the user")
	lock := fs.BoolP("lock", "l", false, "lock the user")
	unlock := fs.BoolP("unlock", "u", false, "unlock the user")
	return func(io stdio, args []string) int {
		n := 0
		for _, b := range []bool{*del, *lock, *unlock} {
			if b {
				n++
			}
		}
		switch {
		case n > 1:
			fmt.Fprintln(io.err, "ocgate passwd: -d, -l and -u exclude each other: give one")
			return exitUsage
		case n == 1 && fs.Changed("groups"):
			fmt.Fprintln(io.err, "ocgate passwd: -g sets a password's groups; it does not go with -d, -l or -u")
			return exitUsage
		}
		return runPasswd(*file, *groups, fs.Changed("groups"), *del, *lock, *unlock, args[0], io)
	}
}

// runPasswd edits file for user as the flags say. Returns the exit status.
func runPasswd(file, groups string, setGroups, del, lock, unlock bool, user string, io stdio) int {
	stdin, stderr := io.in, io.err
	op, password := auth.PasswdSet, ""
	switch {
	case del:
		op = auth.PasswdDelete
	case lock:
		op = auth.PasswdLock
	case unlock:
		op = auth.PasswdUnlock
	default:
		var err error
		if password, err = readNewPassword(stdin, stderr); err != nil {
			fmt.Fprintln(stderr, "ocgate passwd:", err)
			return 1
		}
		// Like ocpasswd, create the file when missing; the default one lives in a directory that may not exist yet.
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			fmt.Fprintln(stderr, "ocgate passwd:", err)
			return 1
		}
	}
	var gs []string // nil: keep the groups of an existing user
	if setGroups {
		gs = []string{}
		for g := range strings.SplitSeq(groups, ",") {
			if g = strings.TrimSpace(g); g != "" {
				gs = append(gs, g)
			}
		}
	}
	if err := auth.EditPasswordFile(file, true, op, user, gs, password); err != nil {
		fmt.Fprintln(stderr, "ocgate passwd:", err)
		return 1
	}
	return 0
}

// readNewPassword reads the new password. On a terminal it asks twice without echo. From a pipe it reads a line,
// and a second one if there is one, which must then match: `printf 'pw\npw\n' | ...` works, and so does the
// single line `echo pw | ocpasswd ...` scripts send (ocpasswd reads one line from a pipe).
func readNewPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	var first, second string
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Enter password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Re-enter password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		first, second = string(a), string(b)
	} else {
		if stdin == nil {
			return "", errors.New("no password on standard input")
		}
		br := bufio.NewReader(stdin)
		a, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return "", err
		}
		b, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return "", err
		}
		first = strings.TrimRight(a, "\r\n")
		second = first
		if b != "" {
			second = strings.TrimRight(b, "\r\n")
		}
	}
	if first != second {
		return "", errors.New("passwords do not match")
	}
	if first == "" {
		return "", errors.New("empty password")
	}
	return first, nil
}
