package config

// ocserv keys ocgate accepts without acting on them, so an ocserv configuration loads: each gets a warning, which
// says "not implemented yet" or why the key is ignored. Keys only listed here and not in ocserv's per-user list
// (src/sup-config/file.c) are errors in per-user and per-group files.

const noWorkers = "ocgate does not fork workers"

var ocservKeys = []key{
	accepted("tls_priorities", global, "Go's TLS stack is configured by ocgate (TLS 1.2 and 1.3)"),
	accepted("limit_worker_memory", global, noWorkers),
	accepted("sec_mod_scale", global, "ocgate does not fork a security module per core"),
	accepted("chroot_dir", global, "not supported"),
	accepted("use_utmp", global, "not supported"),
	accepted("listen_netns", global, "run ocgate in the namespace instead"),
	accepted("dtls_legacy", global, "the legacy DTLS 1.2 mode is always offered to clients that do not ask for "+
		"PSK-NEGOTIATE (dtls_psk = false offers it to all); DTLS 0.9 is not supported"),
	accepted("cisco_client_compat", global, "not needed"),
	accepted("cisco_svc_client_compat", global, "not supported"),
	accepted("match_tls_dtls_ciphers", global, "the DTLS cipher comes from the DTLS handshake (PSK-NEGOTIATE) or "+
		"the client's legacy offer"),
	accepted("ocsp_response", global, "not supported"),
	accepted("pin_file", global, "PKCS#11 keys are not supported"),
	accepted("srk_pin_file", global, "TPM keys are not supported"),
	accepted("key_pin", global, "PKCS#11 keys are not supported"),
	accepted("srk_pin", global, "TPM keys are not supported"),
	accepted("server_stats_reset_time", global, "not supported"),
	accepted("log_level", global, "use --log-level"),
	accepted("syslog_facility", global, "ocgate logs to stderr"),
	accepted("included_http_headers", global, "not supported"),
	accepted("ping_leases", global, "not needed"),
	accepted("output_buffer", global, "not needed"),
	accepted("rekey_time", global, "Go's TLS cannot renegotiate; ocgate advertises no rekey"),
	accepted("rekey_method", global, "Go's TLS cannot renegotiate; ocgate advertises no rekey"),
	accepted("kkdcp", global, "Kerberos is not supported"),
	accepted("udp_listen_host_is_dyndns", global, "not supported"),
	accepted("listen_host_is_dyndns", global, "not supported"),
	accepted("predictable_ips", global, "addresses are always predictable when free"),
	accepted("use_dbus", global, "ocgate has no D-Bus interface; the management socket (socket_file) serves occtl"),
	accepted("cookie_validity", global, "ocserv 0.x's cookie lifetime; set cookie_timeout"),
	accepted("dh_params", global, "Go's TLS stack uses ECDHE only"),
	accepted("net_priority", anyFile, "not supported"),
	accepted("cgroup", anyFile, "ocgate does not move sessions into cgroups (ocserv moves the session's worker "+
		"process; here every session is served by the one server process)"),
	accepted("stats_report_time", anyFile, "ocgate has no accounting (RADIUS) to send interim reports to; "+
		"occtl and /metrics show the sessions' counters"),

	accepted("ipv6_netmask", global, ""),
	accepted("select_group_by_url", global, ""),
	accepted("camouflage", global, ""),
	accepted("camouflage_secret", global, ""),
	accepted("camouflage_realm", global, ""),
	accepted("custom_header", global, ""),
	accepted("proxy_url", global, ""),
	accepted("dtls_mtu", global, ""),
	accepted("max_ban_score_ip", global, ""),
	accepted("restrict_user_to_routes_cmd", global, ""),
	accepted("user_profile", anyFile, ""),
	accepted("client_bypass_protocol", anyFile, ""),
}
