#!/usr/bin/env bash
# integration/bench/compare.sh — ocgate against Debian's ocserv on this machine, in one run, by the same scripts:
# ocserv-baseline.sh (stock openconnect on a kernel TUN in a client namespace, iperf3) and ocproxy-baseline.sh
# (openconnect --script-tun with ocproxy, curl through SOCKS). Prints one table: each figure for both servers and
# the ratio ocgate/ocserv. Needs root (namespaces); apt-get installs ocserv, iperf3, ocproxy when missing.
#
#   bash integration/bench/compare.sh                   # all figures
#   BENCH_MODES=tls bash integration/bench/compare.sh   # TLS-only rows (no DTLS)
#   DURATION=10 CONNECT_RUNS=10 FILE_MB=200             # knobs of the underlying scripts
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
for t in ocserv:ocserv ocpasswd:ocserv openconnect:openconnect ocproxy:ocproxy iperf3:iperf3 curl:curl; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
out=$(mktemp -d /tmp/ocgate-compare.XXXXXX)
export OCGATE_BIN=$out/ocgate
(cd "$here/../.." && go build -o "$OCGATE_BIN" ./cmd/ocgate)
for srv in ocserv ocgate; do
  for script in ocserv-baseline ocproxy-baseline; do
    echo "== $srv $script" >&2
    BENCH_SERVER=$here/servers/$srv.sh bash "$here/$script.sh" >"$out/$srv-$script.txt"
  done
  cat "$out/$srv"-*.txt >"$out/$srv.txt"
done
python3 - "$out/ocserv.txt" "$out/ocgate.txt" <<'PY'
import sys
def load(p):
    d, info = {}, []
    for line in open(p):
        if line.startswith('#'):
            info.append(line.rstrip()); continue
        f = line.split()
        if len(f) == 3: d[f[0]] = (f[1], f[2])
    return d, info
a, ia = load(sys.argv[1]); b, ib = load(sys.argv[2])
for l in ia + ib: print(l)
print(f"{'figure':34} {'ocserv':>10} {'ocgate':>10} {'unit':8} {'ocgate/ocserv':>13}")
for k in a:
    if k not in b: continue
    va, vb = a[k][0], b[k][0]
    try: r = f"{float(vb)/float(va):.2f}"
    except (ValueError, ZeroDivisionError): r = "-"
    print(f"{k:34} {va:>10} {vb:>10} {a[k][1]:8} {r:>13}")
PY
echo "raw results: $out" >&2
