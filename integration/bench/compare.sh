#!/usr/bin/env bash
# integration/bench/compare.sh — ocgate against Debian's ocserv on this machine, in one run, by the same scripts:
# ocserv-baseline.sh (stock openconnect on a kernel TUN in a client namespace, iperf3), ocproxy-baseline.sh
# (openconnect --script-tun with ocproxy, curl through SOCKS) and sessions.sh (a fresh server's PSS, PSS per session
# with 20 stock clients, logins/s with the load generator). Prints one table: each figure for ocserv and for each
# ocgate variant (default: netstack and kernel TUN) with the ratio ocgate/ocserv.
# Needs root (namespaces); apt-get installs ocserv, iperf3, ocproxy when missing.
#
#   bash integration/bench/compare.sh                   # all figures
#   BENCH_MODES=tls bash integration/bench/compare.sh   # TLS-only rows (no DTLS)
#   DURATION=10 CONNECT_RUNS=10 FILE_MB=200 LOGINS=1000 # knobs of the underlying scripts (CONNECT_RUNS: 20 here)
#   OCGATE_VARIANTS="tun=tun tun-pion=tun+pion"          # which ocgate set-ups (NAME=DATAPATH[+pion]) to compare
# Each throughput row also gets the server's CPU seconds per GiB moved (its processes' CPU over the rate).
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
# Each variant is NAME=DATAPATH[+pion]: "+pion" turns dtls_fast_path off (pion's DTLS record layer).
variants=${OCGATE_VARIANTS:-"netstack=netstack tun=tun"}
export CONNECT_RUNS=${CONNECT_RUNS:-20}   # connect latency: median of 20 launches in sequence per server
names=(ocserv)
for srv in ocserv $variants; do
  name=${srv%%=*} spec=${srv#*=} adapter=$here/servers/ocgate.sh
  if [ "$srv" = ocserv ]; then adapter=$here/servers/ocserv.sh; else names+=("$name"); fi
  extra=""; [[ $spec == *+pion ]] && extra="dtls_fast_path = false"
  for script in ocserv-baseline ocproxy-baseline sessions; do
    echo "== $name $script" >&2
    OCGATE_DATAPATH=${spec%+pion} OCGATE_EXTRA_CONFIG=$extra BENCH_SERVER=$adapter \
      bash "$here/$script.sh" >"$out/$name-$script.txt"
  done
  cat "$out/$name"-*.txt >"$out/$name.txt"
done
python3 - "$out" "${names[@]}" <<'PY'
import sys
out, names = sys.argv[1], sys.argv[2:]
def load(p):
    d, info = {}, []
    for line in open(p):
        if line.startswith('#'):
            info.append(line.rstrip()); continue
        f = line.split()
        if len(f) == 3: d[f[0]] = (f[1], f[2])
    return d, info
data = {}
for n in names:
    data[n], info = load(f"{out}/{n}.txt")
    for l in info: print(l)
# Server CPU seconds per GiB moved, for each throughput row: the server's processes (ocserv: main, sec-mod and the
# worker; ocgate: main, the security module's monitor and worker, the privileged helper), % of one core, over the
# row's rate.
for d in data.values():
    for k in [k for k, (v, u) in d.items() if u == "Mbit/s" and not k.endswith("_loss")]:
        cpu = 0.0
        for role in ("main", "secmon", "secmod", "worker", "helper"):
            try: cpu += float(d.get(f"{k}_cpu_{role}", ("0",))[0])
            except ValueError: pass
        try: rate = float(d[k][0])
        except ValueError: continue
        if cpu > 0 and rate > 0:
            d[f"{k}_server_cpu_s_per_gib"] = (f"{cpu / 100 * 8 * 2**30 / (rate * 1e6):.1f}", "s/GiB")
base = data[names[0]]
hdr = f"{'figure':42} {'unit':8} {names[0]:>9}"
for n in names[1:]: hdr += f" {n:>9} {'ratio':>6}"
print(hdr)
for k in base:
    row = f"{k:42} {base[k][1]:8} {base[k][0]:>9}"
    for n in names[1:]:
        v = data[n].get(k, ("-",))[0]
        try: r = f"{float(v)/float(base[k][0]):.2f}"
        except (ValueError, ZeroDivisionError): r = "-"
        row += f" {v:>9} {r:>6}"
    print(row)
PY
echo "raw results: $out" >&2
