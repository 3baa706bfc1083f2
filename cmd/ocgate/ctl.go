package main

// `ocgate ctl` (also reached as `occtl`, a symlink to this binary): the management client. It finds the socket
// from -s, else from the configuration (-c, else /etc/ocgate/ocgate.toml when it exists), else the default place,
// sends one command and prints the server's human text or, with --json, occtl's JSON.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"ocgate/config"
	"ocgate/protocol/ctl"
)

// defaultConfigFile is where `occtl` and `ocgate ctl` look for the configuration when -c is not given.
const defaultConfigFile = "/etc/ocgate/ocgate.toml"

// socketPath is where the server listens: socket_file, else /run/ocgate/ when root, else the state directory.
func socketPath(cfg *config.Config, stateDir string) string {
	if cfg.SocketFile != "" {
		return cfg.SocketFile
	}
	if os.Geteuid() == 0 {
		return "/run/ocgate/ocgate.socket"
	}
	return filepath.Join(stateDir, "ocgate.socket")
}

// ctlCommand is `ocgate ctl`, also run as `occtl`.
var ctlCommand = &command{name: "ctl", args: "COMMAND...", max: -1, setup: ctlSetup,
	summary: "manage a running server with occtl's commands (also run as `occtl`, a symlink)",
	about:   func() string { return "commands:\n" + ctl.Usage() }}

func ctlSetup(fs *pflag.FlagSet) func(stdio, []string) int {
	var socket, cfgFile, stateDir string
	var asJSON bool
	fs.StringVarP(&socket, "socket", "s", "", "the server's control socket")
	fs.StringVarP(&cfgFile, "config", "c", "", "the server's configuration, to find its socket (default "+defaultConfigFile+" if it exists)")
	fs.StringVar(&stateDir, "state-dir", "", "the server's state directory, to find its socket (default "+stateDirDefault()+")")
	fs.BoolVarP(&asJSON, "json", "j", false, "print occtl's JSON")
	fs.BoolP("no-pager", "n", false, "accepted for occtl compatibility (there is no pager)")
	fs.SetInterspersed(false)
	return func(io stdio, words []string) int {
		return runCtl(fs.Name(), socket, cfgFile, stateDir, asJSON, words, io.out, io.err)
	}
}

// runCtl sends the command words to the server and prints its answer. Returns the exit status.
func runCtl(name, socket, cfgFile, stateDir string, asJSON bool, words []string, stdout, stderr io.Writer) int {
	if _, _, err := ctl.ParseCommand(words); err != nil {
		if len(words) > 0 {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
		} else {
			fmt.Fprintf(stderr, "%s: a command is missing\n", name)
		}
		return exitUsage
	}
	if socket == "" {
		cfg := config.Default()
		if cfgFile == "" {
			if _, err := os.Stat(defaultConfigFile); err == nil {
				cfgFile = defaultConfigFile
			}
		}
		if cfgFile != "" {
			var err error
			if cfg, err = config.Load(cfgFile); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", name, err)
				return 1
			}
		}
		if stateDir == "" {
			stateDir = stateDirDefault()
		}
		socket = socketPath(cfg, stateDir)
	}
	c, err := ctl.Dial(socket, words)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer c.Close()
	events := len(words) == 2 && words[0] == "show" && words[1] == "events"
	if events {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		go func() { <-sig; c.Close() }()
	}
	for {
		r, err := c.Next()
		if err != nil {
			if r.Error != "" || !events {
				fmt.Fprintf(stderr, "%s: %v\n", name, err)
				return 1
			}
			return 0 // the event stream ended (interrupted, or the server stopped)
		}
		if asJSON {
			if len(r.Data) > 0 {
				var b bytes.Buffer
				json.Indent(&b, r.Data, "", "  ")
				fmt.Fprintln(stdout, b.String())
			}
		} else {
			fmt.Fprint(stdout, r.Text)
		}
		if !events {
			return 0
		}
	}
}
