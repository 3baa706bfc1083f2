# integration/bench/servers/ocgate.sh — server adapter for ocgate, sourced by the benchmark scripts in
# integration/bench (lib.sh, ocserv-baseline.sh, ocproxy-baseline.sh), so that ocgate and ocserv are measured by the
# same code on the same machine:
#
#   BENCH_SERVER=$PWD/integration/bench/servers/ocgate.sh bash integration/bench/ocproxy-baseline.sh
#
# ocgate runs unprivileged (uid 65534) in netstack mode; with OCGATE_DATAPATH=tun it starts as root with
# run_as_user = "nobody" (a gateway's setup: the privileged helper keeps root for the devices). OCGATE_BIN names a
# built binary; otherwise it is built from this checkout. OCGATE_EXTRA_CONFIG adds TOML lines (e.g.
# "dtls_fast_path = true"); OCGATE_ARGS adds command-line flags (e.g. "--log-level debug").
OCGATE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
srv_name() { echo ocgate; }
srv_version() { "$(ocgate_bin)" --version 2>&1 | awk '{print $2}'; }
ocgate_bin() {
  if [ -z "${OCGATE_BIN:-}" ]; then
    OCGATE_BIN=$W/ocgate
    (cd "$OCGATE_REPO" && go build -o "$OCGATE_BIN" ./cmd/ocgate) || fail "go build failed"
  fi
  echo "$OCGATE_BIN"
}
srv_start() {
  local bin; bin=$(ocgate_bin)
  mkdir -p "$W/ocgate-state"
  cat >"$W/ocgate.toml" <<CFG
listen_host = "$SRV_ADDR"
tcp_port = $PORT
udp_port = $PORT
server_cert = "$CERT"
server_key = "$KEY"
auth = ["plain[passwd=$PASSWD_FILE]"]
ipv4_network = "$POOL_NET"
ipv4_netmask = "$POOL_MASK"
route = ["$ROUTE_NET"]
# The benchmark's target is on the server namespace's lo, an address of the server's own host, which the netstack
# refuses unless it is published (ocserv's kernel routing reaches it as any host would).
egress_allow = ["$TARGET/32"]
datapath = "${OCGATE_DATAPATH:-netstack}"
max_clients = ${MAX_CLIENTS:-64}
max_same_clients = 0
keepalive = 32400
dpd = 90
cookie_timeout = 300
auth_timeout = 240
${OCGATE_EXTRA_CONFIG:-}
CFG
  chown -R 65534:65534 "$W/ocgate-state"
  chmod 755 "$W"
  local as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  if [ "${OCGATE_DATAPATH:-netstack}" = tun ]; then
    echo 'run_as_user = "nobody"' >>"$W/ocgate.toml"
    as=()
  fi
  ip netns exec "$SNS" "${as[@]}" \
    "$bin" -c "$W/ocgate.toml" --state-dir "$W/ocgate-state" ${OCGATE_ARGS:-} >"$W/ocgate.log" 2>&1 &
  SRV_PID=$!; PIDS+=("$SRV_PID")
  wait_server 20 || { tail -20 "$W/ocgate.log" >&2; return 1; }
}
# The PID above is `ip netns exec`'s, which execs ocgate. Its children: the security module's monitor ("secmon"),
# whose child is the module's worker ("secmod", as ocserv's sec-mod), and in tun mode the privileged helper.
srv_procs() {
  echo "main $SRV_PID"
  local c g
  for c in $(pgrep -P "$SRV_PID" 2>/dev/null); do
    case "$(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null)" in
      *__security-module-monitor*)
        echo "secmon $c"
        for g in $(pgrep -P "$c" 2>/dev/null); do echo "secmod $g"; done ;;
      *) echo "helper $c" ;;
    esac
  done
}
