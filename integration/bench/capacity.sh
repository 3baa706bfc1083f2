#!/usr/bin/env bash
# integration/bench/capacity.sh — server capacity with the load generator (integration/loadgen), the same load
# against whichever server adapter BENCH_SERVER names (servers/ocserv.sh by default, servers/ocgate.sh):
#   capacity_fresh_pss              the freshly started server, all its processes, KiB (PSS: shared pages once)
#   capacity_mem20_pss_per_session  20 idle sessions (DTLS up) on the fresh server, after SETTLE: PSS delta of all
#                                   server processes per session, KiB (sessions.sh measures it with openconnect)
#   capacity_bulk_{down,up,total}   SESSIONS sessions, one download and one upload TCP flow through each (DTLS),
#                                   DURATION long: aggregate goodput, MiB/s
#   capacity_bulk_cpu_per_gib       server CPU seconds (all its processes) per GiB moved
#   capacity_setup_per_s            IDLE sessions established CONCURRENCY at a time: sessions per second
#   capacity_setup_p50/p99_ms       their connect latency (TCP connect → CONNECT 200 → DTLS up)
#   capacity_idle_rss_per_session   server RSS (sum over its processes) per idle session, KiB
#   capacity_logins_per_s           LOGINS logins (TCP, TLS 1.3, password, CONNECT, DTLS PSK) CONCURRENCY at a time,
#                                   each session held until all are up: logins per second, sustained over LOGINS
#   capacity_logins_cpu_ms          server CPU (all its processes) per login, ms; the load generator's own CPU, on
#                                   the same cores, is in the log
# Env: SESSIONS (8), DURATION (10s), IDLE (60), CONCURRENCY (16), LOGINS (1000), SETTLE (3s),
#   MAX_CLIENTS (the largest of IDLE and LOGINS + 8).
# compare.sh-style use: for s in ocserv ocgate; do BENCH_SERVER=servers/$s.sh bash capacity.sh; done
IDLE=${IDLE:-60}
LOGINS=${LOGINS:-1000}
MAX_CLIENTS=${MAX_CLIENTS:-$(( (IDLE > LOGINS ? IDLE : LOGINS) + 8))}
# A /24 pool holds 253 clients; more sessions get a /16 (192.168.0.0/16, both servers).
if [ "$MAX_CLIENTS" -gt 250 ]; then export POOL_NET=${POOL_NET:-192.168.0.0} POOL_MASK=${POOL_MASK:-255.255.0.0}; fi
. "$(dirname "$0")/lib.sh"
need ip go python3 openssl
SESSIONS=${SESSIONS:-8}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
SETTLE=${SETTLE:-3s}
export MAX_CLIENTS
loadgen_setup
bg "$SNS" "$LG" --serve "$TARGET:9000"
wait_for 10 tcp_open "$SNS" "$TARGET" 9000 || fail "bulk target did not start"
# Memory first, from a freshly started server, not one whose heap the other runs grew; logins last.
sleep "${SETTLE%s}"   # the fresh server's start-up allocations settle (a measurement interval, not a synchronisation)
result capacity_fresh_pss "$(sum_procs pss_kib)" KiB
log "mem20: 20 sessions, 4 at a time, settle $SETTLE"
lg -n 20 --concurrency 4 --mode idle --duration 1s --settle "$SETTLE" >"$W/mem20.json" || log "warning: loadgen mem20 reported errors"
log "idle: $IDLE sessions, $CONCURRENCY at a time"
lg -n "$IDLE" --concurrency "$CONCURRENCY" --mode idle --duration 2s >"$W/idle.json" || log "warning: loadgen idle reported errors"
log "bulk: $SESSIONS sessions, $DURATION"
lg -n "$SESSIONS" --concurrency "$SESSIONS" --mode bulk --bulk-target "$TARGET:9000" --bulk-dir both \
  --duration "$DURATION" >"$W/bulk.json" || log "warning: loadgen bulk reported errors"

log "logins: $LOGINS, $CONCURRENCY at a time"
lg -n "$LOGINS" --concurrency "$CONCURRENCY" --mode idle --duration 0s --settle 0s >"$W/logins.json" ||
  log "warning: loadgen logins reported errors"

python3 - "$W/bulk.json" "$W/idle.json" "$W/mem20.json" "$W/logins.json" <<'PY' >"$W/results.txt"
import json, sys
b, i, m, l = (json.load(open(p)) for p in sys.argv[1:5])
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
out("capacity_mem20_pss_per_session", round((m.get("server") or {}).get("pss_per_session_kib", 0)), "KiB")
out("capacity_logins_per_s", round(l.get("sessions_per_second", 0)), "logins/s")
out("capacity_logins_cpu_ms", round((l.get("server") or {}).get("cpu_ms_per_session", 0), 2), "ms")
print(f"# capacity_logins: load generator CPU {l.get('loadgen_cpu_seconds', 0) * 1000 / max(l.get('sessions_requested', 1), 1):.2f} ms per login", file=sys.stderr)
PY
while read -r name value unit; do result "$name" "$value" "$unit"; done <"$W/results.txt"
print_results
