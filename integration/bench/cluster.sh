#!/usr/bin/env bash
# bench/cluster.sh — the scale-out closing figures, in one invocation on one machine (run as root):
#   - logins/s and login latency with shared state (Redis) vs without, and Redis commands per login
#     (TestClusterLoginRates: the two servers alternate, INFO commandstats before and after each round);
#   - time from the death of the instance holding a client to that client's traffic through the balancer again
#     (TestRoamFailoverTime: HAProxy with send-proxy-v2, two instances sharing Redis; median of N kills).
# LOGINS (default 400) logins per round, KILLS (default 5) kills. The figures are in the tests' -v log lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OCGATE_BENCH_LOGINS=${LOGINS:-400} OCGATE_BENCH_FAILOVER=${KILLS:-5} \
  go test -count=1 -v -timeout 30m -run 'TestClusterLoginRates|TestRoamFailoverTime' . 2>&1 |
  grep -v -e '^=== ' -e '^\s*$'
