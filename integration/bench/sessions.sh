#!/usr/bin/env bash
# integration/bench/sessions.sh — a small server's memory with the stock client, and the login rate with the load
# generator, against whichever server adapter BENCH_SERVER names (servers/ocserv.sh by default, servers/ocgate.sh):
#   fresh_server_pss        the freshly started server after SETTLE, all its processes, KiB (PSS: pages shared
#                           between them, such as ocgate's one binary in three processes, counted once)
#   connect20_configured_ms CLIENTS stock openconnect clients connected one after another (DTLS up, idle): the
#                           median of their launch → "Configured as" times, ms
#   mem20_pss_per_session   with them connected, after SETTLE: (PSS of all server processes − the fresh
#                           server's) / CLIENTS, KiB
#   fresh_server_anon, mem20_anon_per_session   the same for the anonymous part of PSS (Pss_Anon): the server's own
#                           memory, without its binary's file pages, whose PSS depends on how they came into the page
#                           cache (docs/performance.md): compare two builds on these
#   memnext_pss_per_session, memnext_anon_per_session   NEXT_CLIENTS more clients connected the same way beside
#                           the first ones, after SETTLE: (PSS with both − PSS with the first) / NEXT_CLIENTS, KiB.
#                           The first sessions' figure includes the runtime's one-time growth with a process's first
#                           collections (docs/performance.md, Memory); this one is what a session costs a server
#                           that has collected already
#   logins_per_s            LOGINS logins by the load generator (TCP, TLS 1.3, the password form, CONNECT, DTLS
#                           PSK) CONCURRENCY at a time, each session held until all are up: logins per second
#   logins_cpu_ms           server CPU (all its processes) per login, ms
#   logins_p50_ms           their connect latency, TCP connect → DTLS up
# The load generator runs in another process on the same cores: its CPU per login is in the log (#).
# Env: CLIENTS (20), NEXT_CLIENTS (CLIENTS; 0: none), SETTLE (5 s), LOGINS (1000; 0: memory rows only, for memory A/B runs), CONCURRENCY (16).
#   BENCH_SERVER=$PWD/integration/bench/servers/ocgate.sh bash integration/bench/sessions.sh
CLIENTS=${CLIENTS:-20}
NEXT_CLIENTS=${NEXT_CLIENTS:-$CLIENTS}
SETTLE=${SETTLE:-5}
LOGINS=${LOGINS:-1000}
CONCURRENCY=${CONCURRENCY:-16}
export MAX_CLIENTS=${MAX_CLIENTS:-$((LOGINS + CLIENTS + NEXT_CLIENTS + 8))}
# A /24 pool holds 253 clients; more sessions get a /16 (192.168.0.0/16, both servers).
if [ "$MAX_CLIENTS" -gt 250 ]; then export POOL_NET=${POOL_NET:-192.168.0.0} POOL_MASK=${POOL_MASK:-255.255.0.0}; fi
. "$(dirname "$0")/lib.sh"
need ip go python3 openssl openconnect ocpasswd
loadgen_setup
pss_anon_kib() { awk '/^Pss_Anon:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# Memory: SETTLE is a measurement interval (start-up and handshake garbage settle), not a synchronisation.
sleep "$SETTLE"
pss0=$(sum_procs pss_kib) anon0=$(sum_procs pss_anon_kib)
result fresh_server_pss "$pss0" KiB
result fresh_server_anon "$anon0" KiB
clis=() confs=()
# connect_clients FIRST LAST: clients FIRST..LAST, one after another, each up (DTLS, "Configured as") before the next
connect_clients() {
  local i
  for i in $(seq "$1" "$2"); do
    # No TUN configuration: the session and its DTLS channel are what is measured.
    STAMP_T0=$(now_ms) oc_launch "$W/client$i.log" --script /bin/true
    clis+=("$CLI_PID")
    wait_for 30 dtls_up "$W/client$i.log" || { tail -20 "$W/client$i.log" >&2; fail "client $i: no DTLS"; }
    wait_for 10 connected "$W/client$i.log" || fail "client $i: no \"Configured as\" line"
    confs+=("$(line_ms "$W/client$i.log" '(Configured|Connected) as ')")
  done
}
connect_clients 1 "$CLIENTS"
log "connect (ms, launch → Configured as): ${confs[*]}"
result connect20_configured_ms "$(median "${confs[@]}")" ms
sleep "$SETTLE"
pss1=$(sum_procs pss_kib) anon1=$(sum_procs pss_anon_kib)
log "PSS with $CLIENTS clients: $pss1 KiB (fresh: $pss0 KiB), anonymous $anon1 KiB (fresh: $anon0 KiB)"
result mem20_pss_per_session $(((pss1 - pss0) / CLIENTS)) KiB
result mem20_anon_per_session $(((anon1 - anon0) / CLIENTS)) KiB
if [ "$NEXT_CLIENTS" -gt 0 ]; then
  connect_clients $((CLIENTS + 1)) $((CLIENTS + NEXT_CLIENTS))
  sleep "$SETTLE"
  pss2=$(sum_procs pss_kib) anon2=$(sum_procs pss_anon_kib)
  log "PSS with $((CLIENTS + NEXT_CLIENTS)) clients: $pss2 KiB, anonymous $anon2 KiB"
  result memnext_pss_per_session $(((pss2 - pss1) / NEXT_CLIENTS)) KiB
  result memnext_anon_per_session $(((anon2 - anon1) / NEXT_CLIENTS)) KiB
fi
for p in "${clis[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${clis[@]}"; do wait_for 10 gone "$p" || kill -9 "$p" 2>/dev/null || true; done

if [ "$LOGINS" -eq 0 ]; then print_results; exit 0; fi
log "logins: $LOGINS, $CONCURRENCY at a time"
lg -n "$LOGINS" --concurrency "$CONCURRENCY" --mode idle --duration 0s --settle 0s >"$W/logins.json" ||
  log "warning: loadgen logins reported errors"
python3 - "$W/logins.json" <<'PY' >"$W/results.txt"
import json, sys
l = json.load(open(sys.argv[1]))
print("logins_per_s", round(l.get("sessions_per_second", 0)), "logins/s")
print("logins_cpu_ms", round((l.get("server") or {}).get("cpu_ms_per_session", 0), 2), "ms")
print("logins_p50_ms", round((l.get("connect_latency_ms") or {}).get("p50", 0), 1), "ms")
n = max(l.get("sessions_requested", 1), 1)
print(f"# logins: {l.get('sessions_established', 0)} of {n} established; load generator CPU "
      f"{l.get('loadgen_cpu_seconds', 0) * 1000 / n:.2f} ms per login", file=sys.stderr)
PY
while read -r name value unit; do result "$name" "$value" "$unit"; done <"$W/results.txt"
print_results
