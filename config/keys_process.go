package config

// Keys of the server process: scripts, privileges, the TUN device name, the files it leaves on the host and its
// management interfaces (the control socket, metrics).

var processKeys = []key{
	{name: "device", def: `"vpns"`, doc: "TUN device name prefix (tun datapath).", field: "Device", conv: text},
	{name: "connect_script", def: `""`, field: "ConnectScript", conv: path,
		doc: "Script run when a session connects (ocserv's environment variables)."},
	{name: "disconnect_script", def: `""`, doc: "Script run when a session disconnects.", field: "DisconnectScript", conv: path},
	{name: "host_update_script", def: `""`, field: "HostUpdateScript", conv: path,
		doc: "Script run when a client reports its hostname."},
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
