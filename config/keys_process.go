package config

// Keys of the server process: scripts, privileges, the TUN device name and the files it leaves on the host.

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
	{name: "occtl_socket_file", def: `""`, field: "OcctlSocketFile", conv: path,
		doc:   "Management socket for occtl. The management interface is not built yet: kept, with a warning.",
		inert: "ignored: the management interface is not built yet"},
	{name: "pid_file", def: `""`, field: "PidFile", conv: path,
		doc: "File the server writes its process ID to at start and removes on exit. Empty: none."},
}
