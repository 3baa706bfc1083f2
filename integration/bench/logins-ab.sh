#!/usr/bin/env bash
# integration/bench/logins-ab.sh — the login rows of capacity.sh as an A/B: several ocgate builds (and load
# generator builds) alternating in one invocation, on one set of namespaces, so that a change's effect on the CPU
# per login is read against the same machine load:
#
#   go build -o /tmp/a ./cmd/ocgate        # before the change
#   go build -o /tmp/b ./cmd/ocgate        # after
#   VARIANTS="a=/tmp/a b=/tmp/b" ROUNDS=5 bash integration/bench/logins-ab.sh
#
# A variant is NAME=SERVER[,LOADGEN]: LOADGEN is a load generator binary (default: built from this checkout),
# for A/Bs of the load generator itself. Each round starts each variant's server afresh, runs LOGINS logins
# (TCP, TLS 1.3, the password form, CONNECT, DTLS PSK; CONCURRENCY at a time, each session held until all are up)
# and stops it. Per run it prints logins/s, the server's CPU per login (all its processes, ms) and the load
# generator's; at the end the medians per variant and their ratios to the first variant. On a shared machine the
# CPU per login is the figure to read: logins/s follows whatever else runs.
# Env: VARIANTS (required), ROUNDS (3), LOGINS (1500), CONCURRENCY (16).
VARIANTS=${VARIANTS:?VARIANTS="a=/path/to/ocgate b=/path/to/ocgate[,/path/to/loadgen] ..."}
ROUNDS=${ROUNDS:-3}
LOGINS=${LOGINS:-1500}
CONCURRENCY=${CONCURRENCY:-16}
export MAX_CLIENTS=$((LOGINS + 8))
if [ "$MAX_CLIENTS" -gt 250 ]; then export POOL_NET=${POOL_NET:-192.168.0.0} POOL_MASK=${POOL_MASK:-255.255.0.0}; fi
export BENCH_SERVER=${BENCH_SERVER:-$(cd "$(dirname "$0")" && pwd)/servers/ocgate.sh}
. "$(dirname "$0")/lib.sh"
need ip go python3 openssl ocpasswd

# loadgen_setup, without starting a server: each variant's is started per round.
export OCGATE_EXTRA_CONFIG="${OCGATE_EXTRA_CONFIG:-}
rate_limit_ms = 0
max_ban_score = 0"
netns_up; certs; users; load_server
(cd "$BENCH_DIR/../.." && go build -o "$W/loadgen" ./integration/loadgen) || fail "go build loadgen"

: >"$W/runs.txt"
echo "# variant round logins/s server-ms/login loadgen-ms/login established requested"
for r in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    name=${v%%=*} spec=${v#*=}
    bin=${spec%%,*} LG=$W/loadgen
    [ "$spec" != "$bin" ] && LG=${spec#*,}
    OCGATE_BIN=$bin srv_start
    lg -n "$LOGINS" --concurrency "$CONCURRENCY" --mode idle --duration 0s --settle 0s >"$W/logins.json" ||
      log "warning: loadgen reported errors ($name, round $r)"
    python3 - "$W/logins.json" "$name" "$r" <<'PY' | tee -a "$W/runs.txt"
import json, sys
l = json.load(open(sys.argv[1])); n = max(l.get("sessions_requested", 1), 1)
print(sys.argv[2], sys.argv[3], round(l.get("sessions_per_second", 0)),
      round((l.get("server") or {}).get("cpu_ms_per_session", 0), 3),
      round(l.get("loadgen_cpu_seconds", 0) * 1000 / n, 3), l.get("sessions_established", 0), n)
PY
    stop_pid "$SRV_PID"
    wait_for 10 bash -c "[ -z \"\$(ip netns pids $SNS)\" ]" || fail "server of $name did not exit"
  done
done
python3 - "$W/runs.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
med = {n: [statistics.median(float(r[i]) for r in rows if r[0] == n) for i in (2, 3, 4)] for n in names}
base = med[names[0]]
print("# medians: variant logins/s server-ms loadgen-ms total-ms (ratio to %s: logins/s, server-ms, total-ms)" % names[0])
for n in names:
    m = med[n]
    t, bt = m[1] + m[2], base[1] + base[2]
    print(f"{n} {m[0]:.0f} {m[1]:.3f} {m[2]:.3f} {t:.3f} ({m[0] / base[0]:.2f} {m[1] / base[1]:.2f} {t / bt:.2f})")
PY
