#!/usr/bin/env bash
# integration/bench/idle.sh — many idle sessions (DTLS up, nothing sent) held at once against one server, by
# several load generator processes (each session costs the load generator a TCP and a UDP socket, and one process
# may have 20,000 descriptors here):
#   idle_sessions                   sessions held when the server was sampled (counted on the server's port)
#   idle_setup_seconds              from the first connection until all were established
#   idle_rss_total, idle_pss_total  the server's memory then (all its processes), MiB
#   idle_rss_per_session, idle_pss_per_session   (that − the freshly started server's) / sessions, KiB
#   idle_threads                    the server's OS threads then
# Env: SESSIONS (10000), PER_PROC (5000), CONCURRENCY (32 per process), BENCH_SERVER (servers/ocgate.sh).
#   BENCH_SERVER=servers/ocgate.sh SESSIONS=10000 bash integration/bench/idle.sh
SESSIONS=${SESSIONS:-10000}
PER_PROC=${PER_PROC:-5000}
CONCURRENCY=${CONCURRENCY:-32}
export MAX_CLIENTS=${MAX_CLIENTS:-$((SESSIONS + 8))}
# A /24 pool holds 253 clients: a /16 for both servers.
export POOL_NET=${POOL_NET:-192.168.0.0} POOL_MASK=${POOL_MASK:-255.255.0.0}
BENCH_SERVER=${BENCH_SERVER:-$(dirname "$0")/servers/ocgate.sh}
. "$(dirname "$0")/lib.sh"
need ip go python3 openssl ss
loadgen_setup
held() { ip netns exec "$SNS" ss -Htn state established "( sport = :$PORT )" | wc -l; }
all_held() { [ "$(held)" -ge "$SESSIONS" ]; }
rss0=$(sum_procs rss_kib) pss0=$(sum_procs pss_kib)
log "server started: RSS $rss0 KiB, PSS $pss0 KiB; opening $SESSIONS sessions"

procs=$(((SESSIONS + PER_PROC - 1) / PER_PROC))
hold=$((SESSIONS / 200 + 60))   # seconds each load generator holds its sessions: longer than setup + sampling
t0=$(now_ms)
for i in $(seq 1 "$procs"); do
  n=$PER_PROC; [ "$i" -eq "$procs" ] && n=$((SESSIONS - PER_PROC * (procs - 1)))
  ip netns exec "$CNS" env LOADGEN_PASSWORD="$VPN_PASS" "$LG" --url "https://$SRV_ADDR:$PORT/" --user "$VPN_USER" \
    --pin "pin-sha256:$PIN" -n "$n" --concurrency "$CONCURRENCY" --mode idle --duration "${hold}s" --json -q \
    >"$W/lg$i.json" 2>"$W/lg$i.err" &
  PIDS+=($!)
  LGS+=($!)
done
wait_for $((hold - 10)) all_held || log "warning: only $(held) of $SESSIONS sessions established"
t1=$(now_ms)
sleep 3   # settle: DTLS handshakes of the last sessions, pion retired on their first record
n=$(held)
rss=$(sum_procs rss_kib) pss=$(sum_procs pss_kib)
threads=$(for p in $(srv_procs | awk '{print $2}'); do awk '/^Threads:/ {print $2}' "/proc/$p/status"; done | awk '{t += $1} END {print t}')
for p in "${LGS[@]}"; do kill -INT "$p" 2>/dev/null; done
for p in "${LGS[@]}"; do wait "$p" 2>/dev/null; done
errors=$(python3 - "$W"/lg*.json <<'PY'
import json, sys
errs = {}
for f in sys.argv[1:]:
    try:
        for k, v in (json.load(open(f)).get("errors") or {}).items():
            if "interrupt" in k or "TERMINATE" in k or "context canceled" in k:
                continue
            errs[k] = errs.get(k, 0) + v
    except Exception as e:
        errs[f"{f}: {e}"] = 1
print("; ".join(f"{k}: {v}" for k, v in errs.items()) or "none")
PY
)
log "load generator errors: $errors"
result idle_sessions "$n" sessions
result idle_setup_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1000}')" s
result idle_rss_total $((rss / 1024)) MiB
result idle_pss_total $((pss / 1024)) MiB
result idle_rss_per_session "$(awk -v a="$rss" -v b="$rss0" -v n="$n" 'BEGIN {printf "%.1f", (a - b) / n}')" KiB
result idle_pss_per_session "$(awk -v a="$pss" -v b="$pss0" -v n="$n" 'BEGIN {printf "%.1f", (a - b) / n}')" KiB
result idle_threads "$threads" threads
print_results
