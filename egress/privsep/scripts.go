package privsep

// ocserv's connect, disconnect and host-update scripts. The protocol package decides when they run and builds
// their environment (ocserv's variable names); this file only executes them, in the server process (netstack
// mode, unprivileged) or in the privileged helper (tun mode with run_as_user, as root like ocserv's main process).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Script reasons, ocserv's REASON values.
const (
	ReasonConnect    = "connect"
	ReasonDisconnect = "disconnect"
	ReasonHostUpdate = "host-update"
	// route_add_cmd and route_del_cmd, once per iroute: env holds ROUTE (the prefix, CIDR), DEVICE, USERNAME and
	// GROUPNAME, which fill in ocserv's %{R}, %{RI}, %{D}, %{U} and %{G}.
	ReasonRouteAdd = "route-add"
	ReasonRouteDel = "route-del"
)

// Scripts runs the configured scripts. The zero value runs nothing.
type Scripts struct {
	Connect, Disconnect, HostUpdate string        // absolute paths; "" = none
	RouteAdd, RouteDel              string        // route_add_cmd, route_del_cmd: shell commands; "" = none
	Timeout                         time.Duration // 0 = 60 s; the script's process group is killed after it
}

// scriptPath is the PATH scripts get: they run with a clean environment, as they would from ocserv's main.
const scriptPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// allowedScriptVars are the variables a script may receive (ocserv's, src/main-user.c). The privileged helper
// refuses others, so the unprivileged process cannot pass LD_PRELOAD and the like to a root script.
var allowedScriptVars = map[string]bool{
	"REASON": true, "VHOST": true, "USERNAME": true, "GROUPNAME": true, "DEVICE": true, "ID": true,
	"IP_REAL": true, "IP_REAL_LOCAL": true, "IP_LOCAL": true, "IP_REMOTE": true,
	"IPV6_LOCAL": true, "IPV6_REMOTE": true, "IPV6_PREFIX": true,
	"HOSTNAME": true, "REMOTE_HOSTNAME": true, "USER_AGENT": true, "DEVICE_TYPE": true, "DEVICE_PLATFORM": true,
	"OCSERV_ROUTES": true, "OCSERV_ROUTES4": true, "OCSERV_ROUTES6": true,
	"OCSERV_NO_ROUTES": true, "OCSERV_NO_ROUTES4": true, "OCSERV_NO_ROUTES6": true,
	"OCSERV_DNS": true, "OCSERV_DNS4": true, "OCSERV_DNS6": true,
	"OCSERV_RESTRICT_TO_ROUTES": true, "OCSERV_ALLOW_PORTS": true, "OCSERV_DENY_PORTS": true,
	"STATS_BYTES_IN": true, "STATS_BYTES_OUT": true, "STATS_DURATION": true,
	"ROUTE": true, // route-add and route-del only, checked by routeCommand
}

// CheckScriptEnv checks that env holds only allowed NAME=value entries without NUL bytes.
func CheckScriptEnv(env []string) error {
	if len(env) > 64 {
		return errors.New("too many script variables")
	}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !allowedScriptVars[k] {
			return fmt.Errorf("script variable %.40q not allowed", k)
		}
		if len(v) > 8192 || strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("script variable %s: value too long or holds a NUL byte", k)
		}
	}
	return nil
}

// ScriptError is a script that ran and failed.
type ScriptError struct {
	Script string
	Err    error  // *exec.ExitError, a timeout or a start failure
	Output string // the end of its standard error and output
}

func (e *ScriptError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Script, e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *ScriptError) Unwrap() error { return e.Err }

// RunScript runs the script for reason with env (NAME=value entries, see CheckScriptEnv) and waits for it. It
// returns nil when no script is configured for reason, a *ScriptError when the script fails or exits non-zero.
func (s *Scripts) RunScript(ctx context.Context, reason string, env []string) error {
	var path string
	var args []string
	switch reason {
	case ReasonConnect:
		path = s.Connect
	case ReasonDisconnect:
		path = s.Disconnect
	case ReasonHostUpdate:
		path = s.HostUpdate
	case ReasonRouteAdd, ReasonRouteDel:
		tmpl := s.RouteAdd
		if reason == ReasonRouteDel {
			tmpl = s.RouteDel
		}
		if tmpl == "" {
			return nil
		}
		cmd, err := routeCommand(tmpl, env)
		if err != nil {
			return err
		}
		// As ocserv's system(3): the administrator's command line, through the shell.
		path, args, env = "/bin/sh", []string{"-c", cmd}, nil
	default:
		return fmt.Errorf("unknown script reason %q", reason)
	}
	if path == "" {
		return nil
	}
	if err := CheckScriptEnv(env); err != nil {
		return err
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append([]string{scriptPath}, env...)
	cmd.Env = append(cmd.Env, "REASON="+reason)
	// What it prints goes to our standard error, as ocserv does with a script's output; the end of it also goes
	// into the error.
	out := &tailBuffer{max: 512}
	w := io.MultiWriter(os.Stderr, out)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A script that leaves a child holding its output must not hang us: kill the whole group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %s: %w", timeout, err)
	}
	name := path
	if args != nil {
		name = reason + " command " + strconv.Quote(args[1])
	}
	return &ScriptError{Script: name, Err: err, Output: strings.TrimSpace(string(out.Bytes()))}
}

// routeCommand fills in route_add_cmd or route_del_cmd (tmpl) from env: %{R} is the route as ocserv writes it
// (a.b.c.d/m.m.m.m for IPv4, CIDR for IPv6), %{RI} in CIDR, %{D} the device, %{U} and %{G} the user and group,
// quoted for the shell (a user name is not the administrator's text). The route and the device are checked, so
// nothing else reaches the shell.
func routeCommand(tmpl string, env []string) (string, error) {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	route, err := netip.ParsePrefix(vars["ROUTE"])
	if err != nil {
		return "", fmt.Errorf("route command: ROUTE %.60q is not a prefix", vars["ROUTE"])
	}
	dev := vars["DEVICE"]
	for _, c := range dev {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("route command: device name %.40q refused", dev)
		}
	}
	r := route.Masked().String()
	if route.Addr().Is4() {
		m := net.CIDRMask(route.Bits(), 32)
		r = fmt.Sprintf("%s/%d.%d.%d.%d", route.Masked().Addr(), m[0], m[1], m[2], m[3])
	}
	return strings.NewReplacer("%{RI}", route.Masked().String(), "%{R}", r, "%{D}", dev,
		"%{U}", shellQuote(vars["USERNAME"]), "%{G}", shellQuote(vars["GROUPNAME"])).Replace(tmpl), nil
}

// shellQuote quotes s as one word for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte { return t.buf.Bytes() }
