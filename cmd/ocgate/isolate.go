package main

// isolate_workers: what the sandbox of the network-facing process refuses up front, and what it leaves
// readable. The private key and the password file are never on the list: the process has nothing to do with
// them (the security module holds them), so under Landlock it cannot open them even when it runs as their owner.

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"

	"golang.org/x/net/icmp"

	"ocgate/config"
	"ocgate/egress/privsep"
	"ocgate/egress/secmod"
)

// checkIsolation refuses, before anything starts, what cannot run without execve in the network process.
func checkIsolation(cfg *config.Config) error {
	if !cfg.IsolateWorkers || cfg.Datapath != "netstack" {
		return nil // the tun datapath's scripts run in the privileged helper (run_as_user) or fail the same way
	}
	if cfg.ConnectScript != "" || cfg.DisconnectScript != "" || cfg.HostUpdateScript != "" {
		return errors.New("isolate_workers = true forbids execve in the server process, and the netstack datapath " +
			"runs connect/disconnect/host-update scripts there: remove the scripts or set isolate_workers = false")
	}
	if cfg.ICMPEcho == "exec" {
		return errors.New(`isolate_workers = true forbids execve: icmp_echo = "exec" (the system ping) cannot work; ` +
			`use "socket", "raw" or "off"`)
	}
	return nil
}

// icmpStrategy is icmp_echo, except that under isolate_workers "auto" never picks "exec": it probes the two
// socket strategies here, as the netstack would, and falls back to "off".
func icmpStrategy(cfg *config.Config, log *slog.Logger) string {
	if !cfg.IsolateWorkers || (cfg.ICMPEcho != "auto" && cfg.ICMPEcho != "") {
		return cfg.ICMPEcho
	}
	for _, s := range []struct{ network, name string }{{"udp4", "socket"}, {"ip4:icmp", "raw"}} {
		if c, err := icmp.ListenPacket(s.network, "0.0.0.0"); err == nil {
			c.Close()
			return s.name
		}
	}
	log.Warn(`isolate_workers: no ICMP socket can be opened and the system ping cannot run (no execve): clients' pings go unanswered`)
	return "off"
}

// isolationConfig lists what the sandboxed process may still open: system files it reads (name resolution, user
// lookups, time zones, /proc for the metrics), the configuration it re-reads on reload, the per-user files and the
// TUN device when it creates devices itself.
func isolationConfig(cfg *config.Config, stateDir string, helper bool, log *slog.Logger) privsep.IsolateConfig {
	c := privsep.IsolateConfig{
		ReadDirs: []string{"/proc", "/sys", "/usr/share/zoneinfo", cfg.ConfigPerUser, cfg.ConfigPerGroup},
		ReadFiles: []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group",
			"/etc/localtime", "/etc/services", "/etc/gai.conf", "/etc/host.conf", cfg.DefaultUserConfig,
			cfg.DefaultGroupConfig},
	}
	if cfg.Path != "" {
		// The whole directory when it holds no secret (a reload must see a file replaced by rename); otherwise
		// only the file as it is now.
		dir := filepath.Dir(cfg.Path)
		secrets := []string{cfg.ServerKey, cfg.PlainPasswd(), stateDir}
		if !anyUnder(dir, secrets) {
			c.ReadDirs = append(c.ReadDirs, dir)
		} else {
			c.ReadFiles = append(c.ReadFiles, cfg.Path)
			log.Warn("isolate_workers: the configuration's directory also holds the key, the password file or the "+
				"state; only the configuration file itself stays readable (a reload after replacing it by rename is refused)",
				"dir", dir)
		}
	}
	if cfg.Datapath == "tun" && !helper {
		c.Devices = []string{"/dev/net/tun"}
	}
	return c
}

// anyUnder reports whether one of paths is dir or inside it.
func anyUnder(dir string, paths []string) bool {
	dir, _ = filepath.Abs(dir)
	for _, p := range paths {
		if p == "" {
			continue
		}
		p, _ = filepath.Abs(p)
		if p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// isolate applies isolate_workers (once listening, privileges dropped).
func isolate(cfg *config.Config, stateDir string, helper bool, log *slog.Logger) error {
	if !cfg.IsolateWorkers {
		return nil
	}
	r, err := privsep.Isolate(isolationConfig(cfg, stateDir, helper, log))
	for _, w := range r.Warnings {
		log.Warn(w)
	}
	if err != nil {
		return err
	}
	log.Info("isolated: seccomp and Landlock applied", "seccomp", r.Seccomp, "landlock_abi", r.Landlock)
	return nil
}

// serverHooks is what the test hooks reach.
type serverHooks struct {
	secmod   *secmod.Client
	log      *slog.Logger
	stateDir string
}

// installTestHooks is set by testhooks.go (built with -tags testhooks only).
var installTestHooks func(s *serverHooks)
