package config

// Keys of the server process: scripts, privileges, the TUN device name, the files it leaves on the host and its
// management interfaces (the control socket, metrics).

import "strings"

var processKeys = []key{
	{name: "device", def: `"vpns"`, doc: "TUN device name prefix (tun datapath).", field: "Device", conv: text},
	{name: "connect_script", def: `""`, field: "ConnectScript", conv: path,
		doc: "Script run when a session connects (ocserv's environment variables)."},
	{name: "disconnect_script", def: `""`, doc: "Script run when a session disconnects.", field: "DisconnectScript", conv: path},
	{name: "host_update_script", def: `""`, field: "HostUpdateScript", conv: path,
		doc: "Script run when a client reports its hostname."},
	{name: "route_add_cmd", def: `""`, ex: `"/usr/local/sbin/announce add %{RI} %{D}"`, field: "RouteAddCmd",
		conv: routeCmd, doc: "Command run (by /bin/sh, as root in tun mode) for each iroute of a session when its tunnel\n" +
			"comes up: %{R} is the route (a.b.c.d/m.m.m.m for IPv4, CIDR for IPv6), %{RI} the route in CIDR, %{D} the\n" +
			"session's device (\"\" with the netstack datapath), %{U} the user, %{G} the group. Unlike ocserv, ocgate routes\n" +
			"the iroute to the session itself (tun: a kernel route to the device), so the command is for what comes in\n" +
			"addition (announcing the route, a firewall rule); use `ip route replace`, not `add`, to touch that route.\n" +
			"A failure is logged; the session stays."},
	{name: "route_del_cmd", def: `""`, ex: `"/usr/local/sbin/announce del %{RI} %{D}"`, field: "RouteDelCmd",
		conv: routeCmd, doc: "Command run for each iroute of a session when it ends (after route_add_cmd ran); the same\n" +
			"substitutions."},
	{name: "run_as_user", def: `""`, field: "RunAsUser", conv: text,
		doc: "Drop privileges to this user once listening (root only; the tun datapath keeps a privileged helper)."},
	{name: "run_as_group", def: `""`, doc: "Group to drop privileges to, with run_as_user.", field: "RunAsGroup", conv: text},
	{name: "sec_mod_user", def: `""`, field: "SecModUser", conv: text,
		doc: "User the security module (the process holding the private key and the password file) runs as, when\n" +
			"started as root: it opens those files first, then drops. Empty: run_as_user."},
	{name: "isolate_workers", def: "false", field: "IsolateWorkers", conv: boolean,
		doc: "Sandbox the network-facing process once it listens: seccomp (no execve, no ptrace, no new privileges)\n" +
			"and Landlock (files: read-only configuration and system files, the state directory). Refuses scripts\n" +
			"with the netstack datapath and icmp_echo = \"exec\"; warns where the kernel lacks support."},
	{name: "occtl_socket_file", ex: `"/run/ocgate/ocgate.socket"`, field: "SocketFile", conv: path,
		doc: "ocserv's name for socket_file; socket_file wins when both are set."},
	{name: "socket_file", def: `""`, field: "SocketFile", conv: path,
		doc: "Management socket (`ocgate ctl`, occtl). Empty: ocgate.socket in the state directory, or in /run/ocgate/\n" +
			"when started by root. Mode 0600; only the server's user and root may use it."},
	{name: "use_occtl", def: "true", field: "UseOcctl", conv: boolean,
		doc: "Serve the management socket."},
	{name: "metrics_listen", def: `""`, ex: `"127.0.0.1:9617"`, field: "MetricsListen", conv: text,
		doc: "HOST:PORT serving Prometheus /metrics, /healthz and /readyz over plain HTTP. Empty: off."},
	{name: "pid_file", def: `""`, field: "PidFile", conv: path,
		doc: "File the server writes its process ID to at start and removes on exit. Empty: none."},
}

// routeCmd checks route_add_cmd and route_del_cmd: ocserv's substitutions only, so that a typo is an error at load
// rather than a command that fails at each connection.
func routeCmd(p *parser, key string, v any) (any, bool) {
	s, ok := p.str(key, v)
	if !ok {
		return nil, false
	}
	rest := s
	for {
		i := strings.Index(rest, "%")
		if i < 0 {
			return s, true
		}
		rest = rest[i:]
		tok, _, _ := strings.Cut(rest, "}")
		switch tok {
		case "%{R", "%{RI", "%{D", "%{U", "%{G":
			rest = rest[len(tok)+1:]
		default:
			p.errf(key, "%q: unknown substitution %.8q; ocserv's are %%{R}, %%{RI}, %%{D}, %%{U} and %%{G}", s, tok)
			return nil, false
		}
	}
}
