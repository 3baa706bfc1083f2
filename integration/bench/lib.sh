# bench/lib.sh — shared helpers for the VPN benchmarks (sourced, not run).
#
# Topology (names from OCB_PREFIX, "ocb" by default: one run at a time per prefix; two runs at once need two
# prefixes, of at most 12 characters):
#   netns ocb-srv: veth ocb-vs 10.99.0.1/24, target 10.77.0.1/32 on lo (this kernel has no dummy driver)
#   netns ocb-cli: veth ocb-vc 10.99.0.2/24, the client (openconnect) and its TUN
# Everything a script starts is tracked; on exit the trap kills those PIDs, then whatever still runs inside the two
# namespaces (nothing else runs there: they are created here), deletes the namespaces and the work dir.
#
# Server adapters: a file defining srv_name, srv_version, srv_start, srv_procs (see servers/ocserv.sh). Select one
# with BENCH_SERVER=/path/to/adapter.sh; default is servers/ocserv.sh.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OCB_PREFIX=${OCB_PREFIX:-ocb}
SNS=$OCB_PREFIX-srv
CNS=$OCB_PREFIX-cli
SRV_ADDR=10.99.0.1
CLI_ADDR=10.99.0.2
TARGET=10.77.0.1
ROUTE_NET=10.77.0.0/24
POOL_NET=${POOL_NET:-192.168.77.0}
POOL_MASK=${POOL_MASK:-255.255.255.0}   # capacity.sh widens it for more than 250 sessions
PORT=${PORT:-4443}
BENCH_MODES=${BENCH_MODES:-dtls tls}   # "tls" alone for a server without DTLS
VPN_USER=bench
VPN_PASS=bench-pw-1
W=$(mktemp -d /tmp/ocb.XXXXXX)
PIDS=()
RESULTS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null || fail "missing tool: $c"; done; }

# result NAME VALUE UNIT: remember a figure; print_results prints them all at the end
result() { RESULTS+=("$1 $2 $3"); log "result: $1 $2 $3"; }
print_results() { local r; for r in "${RESULTS[@]}"; do echo "$r"; done; }

# wait_for SECONDS CMD...: poll CMD every 20 ms until it succeeds; 1 if the deadline passes
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.02
  done
}
gone() { ! kill -0 "$1" 2>/dev/null; }
# stop_pid PID: TERM, wait up to 10 s, then KILL
stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true
  wait_for 10 gone "$1" || kill -9 "$1" 2>/dev/null || true
}
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }   # bash 5: no fork

cleanup() {
  local rc=$? p ns
  set +e
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for ns in "$CNS" "$SNS"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  for ns in "$CNS" "$SNS"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do wait_for 5 gone "$p" || kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ -n "${BENCH_KEEP:-}" ]; then log "work dir kept: $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- namespaces -------------------------------------------------------------------------------------------------
ns_fresh() { # a leftover namespace with nothing inside is deleted; one with processes means another run
  local ns=$1
  if ip netns list | grep -qw "$ns"; then
    [ -z "$(ip netns pids "$ns")" ] || fail "netns $ns exists and has processes (another run?)"
    ip netns del "$ns"
  fi
}
netns_up() {
  ns_fresh "$SNS"; ns_fresh "$CNS"
  ip netns add "$SNS"; ip netns add "$CNS"
  ip -n "$SNS" link set lo up; ip -n "$CNS" link set lo up
  ip link add "$OCB_PREFIX-vs" type veth peer name "$OCB_PREFIX-vc"
  ip link set "$OCB_PREFIX-vs" netns "$SNS"; ip link set "$OCB_PREFIX-vc" netns "$CNS"
  ip -n "$SNS" addr add "$SRV_ADDR/24" dev "$OCB_PREFIX-vs"; ip -n "$SNS" link set "$OCB_PREFIX-vs" up
  ip -n "$CNS" addr add "$CLI_ADDR/24" dev "$OCB_PREFIX-vc"; ip -n "$CNS" link set "$OCB_PREFIX-vc" up
  ip -n "$SNS" addr add "$TARGET/32" dev lo
  ip netns exec "$SNS" sysctl -qw net.ipv4.ip_forward=1
  wait_for 10 ip netns exec "$CNS" ping -c1 -W1 "$SRV_ADDR" || fail "veth not up"
}
# bg NS CMD...: start CMD in NS in the background (ip netns exec directly, so $! is the program) and track it;
# its output goes to $W/bg.log
bg() { local ns=$1; shift; ip netns exec "$ns" "$@" >>"$W/bg.log" 2>&1 & LAST_PID=$!; PIDS+=("$LAST_PID"); }
tcp_open() { ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

# --- credentials ------------------------------------------------------------------------------------------------
certs() { # CA + server cert signed by it (ECDSA P-256); PIN = pin-sha256 of the server key
  local d=$W/pki; mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 -subj /CN=ocb-bench-ca \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$SRV_ADDR" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$SRV_ADDR" >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 3 \
    -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
  cat "$d/server.pem" "$d/ca.pem" >"$d/server-chain.pem"
  chmod 644 "$d"/*
  CA=$d/ca.pem; CERT=$d/server-chain.pem; KEY=$d/server.key
  PIN=$(openssl x509 -in "$d/server.pem" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64)
}
users() { # ocpasswd-format file with VPN_USER
  PASSWD_FILE=$W/users.passwd
  printf '%s\n%s\n' "$VPN_PASS" "$VPN_PASS" | ocpasswd -c "$PASSWD_FILE" "$VPN_USER" >/dev/null
  chmod 644 "$PASSWD_FILE"
}

# --- server adapter ---------------------------------------------------------------------------------------------
load_server() {
  BENCH_SERVER=${BENCH_SERVER:-$BENCH_DIR/servers/ocserv.sh}
  # shellcheck source=/dev/null
  . "$BENCH_SERVER"
  log "server: $(srv_name) $(srv_version)"
}
wait_server() { wait_for "${1:-20}" tcp_open "$CNS" "$SRV_ADDR" "$PORT" || fail "server did not listen on $SRV_ADDR:$PORT"; }

# --- client -----------------------------------------------------------------------------------------------------
# tun_script: the --script for a real TUN: address, MTU, pushed routes; never touches resolv.conf
tun_script() {
  cat >"$W/tun-up.sh" <<'SH'
#!/bin/sh
case "$reason" in connect)
  ip link set "$TUNDEV" up mtu "${INTERNAL_IP4_MTU:-1400}"
  ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
  i=0
  while [ "$i" -lt "${CISCO_SPLIT_INC:-0}" ]; do
    eval a=\$CISCO_SPLIT_INC_${i}_ADDR m=\$CISCO_SPLIT_INC_${i}_MASKLEN
    ip route replace "$a/$m" dev "$TUNDEV"; i=$((i + 1))
  done ;;
esac
SH
  chmod 755 "$W/tun-up.sh"
}
# oc_tun LOG [openconnect args]: openconnect with a kernel TUN in ocb-cli; sets CLI_PID (no waiting)
oc_tun() { local logf=$1; shift; oc_launch "$logf" --script "$W/tun-up.sh" "$@"; }
# oc_proxy LOG SOCKSPORT [openconnect args]: openconnect --script-tun with ocproxy (no TUN) in ocb-cli
oc_proxy() { local logf=$1 sport=$2; shift 2; oc_launch "$logf" --script-tun --script "ocproxy -D $sport" "$@"; }
# loadgen_setup: namespaces, certificates, users, the server under test started and unthrottled (ocserv's default
# rate-limit-ms is 0 and it does not ban its local subnet: ocgate gets the same), the load generator built as $LG
loadgen_setup() {
  export OCGATE_EXTRA_CONFIG="${OCGATE_EXTRA_CONFIG:-}
rate_limit_ms = 0
max_ban_score = 0"
  netns_up; certs; users; load_server
  srv_start
  LG=$W/loadgen
  (cd "$BENCH_DIR/../.." && go build -o "$LG" ./integration/loadgen) || fail "go build loadgen"
}

# lg [loadgen args]: the load generator in ocb-cli against the server, its CPU and memory sampled from the server's
# main process and its descendants, JSON on stdout
lg() {
  LOADGEN_PASSWORD=$VPN_PASS ip netns exec "$CNS" "$LG" --url "https://$SRV_ADDR:$PORT/" --user "$VPN_USER" \
    --pin "pin-sha256:$PIN" --server-pid "$(srv_procs | awk '$1 == "main" {print $2; exit}')" --server-tree --json -q "$@"
}
# sum_procs FN: FN (rss_kib, pss_kib) summed over the server's processes
sum_procs() { local f=$1 t=0 p; for p in $(srv_procs | awk '{print $2}'); do t=$((t + $($f "$p"))); done; echo $t; }

# oc_launch LOG [args]: the stock client, password on stdin, server key pinned; stdout+stderr to LOG. With STAMP_T0
# set (ms, from now_ms), each line is written as "MS-SINCE-T0 line" when it arrives (openconnect flushes each line).
oc_launch() {
  local logf=$1; shift
  local cmd=(openconnect --protocol=anyconnect --user="$VPN_USER" --passwd-on-stdin --non-inter
    --servercert "pin-sha256:$PIN" "$@" "https://$SRV_ADDR:$PORT/")
  printf '%s\n' "$VPN_PASS" >"$W/pw"
  : >"$logf"   # truncate here, not in the child: no stale lines from a previous run
  if [ -n "${STAMP_T0:-}" ]; then
    ip netns exec "$CNS" "${cmd[@]}" <"$W/pw" > >(stamp_lines "$STAMP_T0" >>"$logf") 2>&1 &
  else
    ip netns exec "$CNS" "${cmd[@]}" <"$W/pw" >>"$logf" 2>&1 &
  fi
  CLI_PID=$!; PIDS+=("$CLI_PID")
}
stamp_lines() { local l t; while IFS= read -r l; do t=${EPOCHREALTIME/./}; printf '%s %s\n' $((t / 1000 - $1)) "$l"; done; }
# line_ms LOG REGEX: the stamp of the first stamped line matching REGEX (empty if none)
line_ms() { awk -v re="$2" '$0 ~ re {print $1; exit}' "$1"; }
connected() { grep -qE '(Configured|Connected) as ' "$1"; }
dtls_up() { grep -q 'Established DTLS connection' "$1"; }
tun_has_ip() { ip -n "$CNS" -4 -o addr show | grep -q ' inet 192\.168\.77\.'; }
tun_ping() { ip netns exec "$CNS" ping -n -c1 -W1 "$TARGET" >/dev/null 2>&1; }
tun_dev() { ip -n "$CNS" -o link show | awk -F': ' '$2 ~ /^tun/ {print $2; exit}'; }
# stop_client: TERM openconnect (it sends BYE) and anything it spawned (ocproxy) in ocb-cli
stop_client() {
  local p
  stop_pid "${CLI_PID:-}"
  for p in $(ip netns pids "$CNS"); do
    grep -qx 'ocproxy' "/proc/$p/comm" 2>/dev/null && stop_pid "$p"
  done
  wait_for 10 bash -c "! ip -n $CNS -o link show | grep -q ': tun'" || true
}

# --- measurement ------------------------------------------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
# cpu_ticks PID: utime+stime in clock ticks (0 if gone)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# sys_ticks PID: the part of cpu_ticks spent in the kernel (system calls: for a VPN server, mostly the network
# stack's work on its sends and device writes, including delivery to the far end's sockets on this machine)
sys_ticks() { awk '{print $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# total_busy: non-idle ticks summed over all CPUs, and total ticks: "busy total"
total_busy() { awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# cpu_during "ROLE:PID ..." CMD...: run CMD, then report each ROLE's CPU as % of one core over CMD's wall time,
# and whole-machine busy % (of all cores); sets CPU_REPORT ("role=NN ... machine=NN")
cpu_during() {
  local specs=$1; shift
  local s before=() sbefore=() after t0 t1 b0 b1 rc=0 i=0 role pid
  for s in $specs; do before+=("$(cpu_ticks "${s#*:}")"); sbefore+=("$(sys_ticks "${s#*:}")"); done
  read -r b0 t0 < <(total_busy)
  local w0; w0=$(now_ms)
  "$@" || rc=$?
  local w1; w1=$(now_ms)
  read -r b1 t1 < <(total_busy)
  CPU_REPORT=""
  for s in $specs; do
    role=${s%%:*}; pid=${s#*:}; after=$(cpu_ticks "$pid")
    CPU_REPORT+="$role=$(( (after - before[i]) * 100000 / HZ / (w1 - w0) )) "
    CPU_REPORT+="${role}_sys=$(( ($(sys_ticks "$pid") - sbefore[i]) * 100000 / HZ / (w1 - w0) )) "
    i=$((i + 1))
  done
  CPU_REPORT+="machine=$(( (b1 - b0) * 100 / (t1 - t0) ))"
  return "$rc"
}

# iperf_json ARGS...: iperf3 client in ocb-cli; prints the JSON
iperf_json() { ip netns exec "$CNS" iperf3 -J "$@"; }
# json_get FILE EXPR: python expression over j (the parsed JSON)
json_get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
tcp_mbps() { json_get "$1" "round(j['end']['sum_received']['bits_per_second']/1e6)"; }
udp_mbps() { json_get "$1" "round(j['end']['sum']['bits_per_second']*(100-j['end']['sum']['lost_percent'])/100/1e6)"; }
udp_loss() { json_get "$1" "round(j['end']['sum']['lost_percent'],2)"; }
# record_cpu PREFIX: turn CPU_REPORT into result lines PREFIX_cpu_ROLE
record_cpu() { local kv; for kv in $CPU_REPORT; do result "${1}_cpu_${kv%%=*}" "${kv#*=}" "%"; done; }
# cpu_specs [ROLE:PID...]: server processes, the openconnect client, and any extra
cpu_specs() { srv_procs | awk '{printf "%s:%s ", $1, $2}'; echo "client:$CLI_PID $*"; }
iperf_to() { local f=$1; shift; iperf_json "$@" >"$f"; }
# udp_rcvbuf_errors NS: the namespace's count of UDP datagrams dropped for a full socket receive buffer
udp_rcvbuf_errors() { ip netns exec "$1" awk '$1 == "Udp:" && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }
# session_info LOG: the negotiated ciphers, the assigned address and the TUN MTU (if any) as one line
session_info() {
  local dev
  grep -hoE 'ciphersuite .*|Ciphersuite .*' "$1" | tr '\n' ' '
  grep -hoE '(Configured|Connected) as .*' "$1" | tr '\n' ' '
  dev=$(tun_dev); [ -n "$dev" ] && ip -n "$CNS" -o link show "$dev" | sed 's/.* mtu \([0-9]*\).*/(tun mtu \1)/'
  echo
}
