#!/usr/bin/env bash
# integration/bench/capacity.sh — server capacity with the load generator (integration/loadgen), the same load
# against whichever server adapter BENCH_SERVER names (servers/ocserv.sh by default, servers/ocgate.sh):
#   capacity_bulk_{down,up,total}   SESSIONS sessions, one download and one upload TCP flow through each (DTLS),
#                                   DURATION long: aggregate goodput, MiB/s
#   capacity_bulk_cpu_per_gib       server CPU seconds (all its processes) per GiB moved
#   capacity_setup_per_s            IDLE sessions established CONCURRENCY at a time: sessions per second
#   capacity_setup_p50/p99_ms       their connect latency (TCP connect → CONNECT 200 → DTLS up)
#   capacity_idle_rss_per_session   server RSS (sum over its processes) per idle session, KiB
# Env: SESSIONS (8), DURATION (10s), IDLE (60), CONCURRENCY (16), MAX_CLIENTS (IDLE + 8).
# compare.sh-style use: for s in ocserv ocgate; do BENCH_SERVER=servers/$s.sh bash capacity.sh; done
IDLE=${IDLE:-60}
MAX_CLIENTS=${MAX_CLIENTS:-$((IDLE + 8))}
# A /24 pool holds 253 clients; more sessions get a /16 (192.168.0.0/16, both servers).
if [ "$MAX_CLIENTS" -gt 250 ]; then export POOL_NET=${POOL_NET:-192.168.0.0} POOL_MASK=${POOL_MASK:-255.255.0.0}; fi
. "$(dirname "$0")/lib.sh"
need ip go python3 openssl
SESSIONS=${SESSIONS:-8}
DURATION=${DURATION:-10s}
IDLE=${IDLE:-60}
CONCURRENCY=${CONCURRENCY:-16}
export MAX_CLIENTS=${MAX_CLIENTS:-$((IDLE + 8))}
loadgen_setup
bg "$SNS" "$LG" --serve "$TARGET:9000"
wait_for 10 tcp_open "$SNS" "$TARGET" 9000 || fail "bulk target did not start"
MAIN=$(srv_procs | awk '$1 == "main" {print $2; exit}')
lg() { LOADGEN_PASSWORD=$VPN_PASS ip netns exec "$CNS" "$LG" --url "https://$SRV_ADDR:$PORT/" --user "$VPN_USER" \
  --pin "pin-sha256:$PIN" --server-pid "$MAIN" --server-tree --json -q "$@"; }

# Idle first: its memory per session is measured from a freshly started server, not one whose heap the bulk
# run grew.
log "idle: $IDLE sessions, $CONCURRENCY at a time"
lg -n "$IDLE" --concurrency "$CONCURRENCY" --mode idle --duration 2s >"$W/idle.json" || log "warning: loadgen idle reported errors"
log "bulk: $SESSIONS sessions, $DURATION"
lg -n "$SESSIONS" --concurrency "$SESSIONS" --mode bulk --bulk-target "$TARGET:9000" --bulk-dir both \
  --duration "$DURATION" >"$W/bulk.json" || log "warning: loadgen bulk reported errors"

python3 - "$W/bulk.json" "$W/idle.json" <<'PY' >"$W/results.txt"
import json, sys
b, i = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
bulk, srv = b.get("bulk") or {}, b.get("server") or {}
def out(name, v, unit): print(f"{name} {v} {unit}")
out("capacity_bulk_down", round(bulk.get("down_mib_per_s", 0), 1), "MiB/s")
out("capacity_bulk_up", round(bulk.get("up_mib_per_s", 0), 1), "MiB/s")
out("capacity_bulk_total", round(bulk.get("total_mib_per_s", 0), 1), "MiB/s")
out("capacity_bulk_cpu_per_gib", round(bulk.get("server_cpu_seconds_per_gib", 0), 1), "s/GiB")
out("capacity_setup_per_s", round(i.get("sessions_per_second", 0), 1), "sessions/s")
lat = i.get("connect_latency_ms") or {}
out("capacity_setup_p50_ms", round(lat.get("p50", 0)), "ms")
out("capacity_setup_p99_ms", round(lat.get("p99", 0)), "ms")
out("capacity_idle_rss_per_session", round((i.get("server") or {}).get("rss_per_session_kib", 0)), "KiB")
PY
while read -r name value unit; do result "$name" "$value" "$unit"; done <"$W/results.txt"
print_results
