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
#   RUNS=5 SCRIPTS="ocserv-baseline sessions"            # 5 rounds, each running every server in turn: the table
#                                                        # gives medians and, per row, the worst round's ratio
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
for srv in $variants; do names+=("${srv%%=*}"); done
runs=${RUNS:-1}
scripts=${SCRIPTS:-"ocserv-baseline ocproxy-baseline sessions"}
# Rounds alternate the servers (ocserv, then each variant, then ocserv again...), so that a slow spell of the
# machine hits them alike rather than one server's whole series.
for r in $(seq 1 "$runs"); do
  for srv in ocserv $variants; do
    name=${srv%%=*} spec=${srv#*=} adapter=$here/servers/ocgate.sh
    [ "$srv" = ocserv ] && adapter=$here/servers/ocserv.sh
    extra=""; [[ $spec == *+pion ]] && extra="dtls_fast_path = false"
    for script in $scripts; do
      echo "== round $r/$runs: $name $script" >&2
      OCGATE_DATAPATH=${spec%+pion} OCGATE_EXTRA_CONFIG=$extra BENCH_SERVER=$adapter \
        bash "$here/$script.sh" >"$out/$name-$script-$r.txt"
    done
    cat "$out/$name"-*-"$r".txt >"$out/$name-round$r.txt"
  done
done
python3 - "$out" "$runs" "${names[@]}" <<'PY'
import statistics, sys
out, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(p):
    d, info = {}, []
    for line in open(p):
        if line.startswith('#'):
            info.append(line.rstrip()); continue
        f = line.split()
        if len(f) == 3: d[f[0]] = (f[1], f[2])
    return d, info
# Server CPU seconds per GiB moved, for each throughput row: the server's processes (ocserv: main, sec-mod and the
# worker; ocgate: main, the security module's monitor and worker, the privileged helper), % of one core, over the
# row's rate.
def add_cpu(d):
    for k in [k for k, (v, u) in d.items() if u == "Mbit/s" and not k.endswith("_loss")]:
        cpu = 0.0
        for role in ("main", "secmon", "secmod", "worker", "helper"):
            try: cpu += float(d.get(f"{k}_cpu_{role}", ("0",))[0])
            except ValueError: pass
        try: rate = float(d[k][0])
        except ValueError: continue
        sys_ = 0.0
        for role in ("main", "secmon", "secmod", "worker", "helper"):
            try: sys_ += float(d.get(f"{k}_cpu_{role}_sys", ("0",))[0])
            except ValueError: pass
        if cpu > 0 and rate > 0:
            d[f"{k}_server_cpu_s_per_gib"] = (f"{cpu / 100 * 8 * 2**30 / (rate * 1e6):.1f}", "s/GiB")
            # The kernel's share: system calls, where the sends, device writes and this machine's delivery to
            # the client's and the target's sockets run.
            d[f"{k}_server_sys_s_per_gib"] = (f"{sys_ / 100 * 8 * 2**30 / (rate * 1e6):.1f}", "s/GiB")
rounds = {}   # name -> [dict per round]
for n in names:
    rounds[n] = []
    for r in range(1, runs + 1):
        d, info = load(f"{out}/{n}-round{r}.txt")
        if r == 1:
            for l in info: print(l)
        add_cpu(d)
        rounds[n].append(d)
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
def median(n, k):
    vs = [x for x in (num(d.get(k, (None,))[0]) for d in rounds[n]) if x is not None]
    return statistics.median(vs) if vs else None
# Higher is better for rates; for times, memory and CPU per GiB lower is. The worst round is the one whose ratio to
# ocserv's figure of the same round is least favourable.
def higher_better(unit, k):
    return unit in ("Mbit/s", "MiB/s", "logins/s", "req/s") or k.endswith("_per_s")
base = rounds[names[0]][0]
keys = list(base)
for d in rounds[names[0]][1:]:
    keys += [k for k in d if k not in keys]
fmt = lambda x: "-" if x is None else (f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}")
hdr = f"{'figure':42} {'unit':8} {names[0]:>9}"
for n in names[1:]:
    hdr += f" {n:>9} {'ratio':>6}" + (f" {'worst':>6}" if runs > 1 else "")
print(f"# {runs} round(s); figures are medians over the rounds" if runs > 1 else "# 1 round")
print(hdr)
for k in keys:
    unit = next((d[k][1] for d in rounds[names[0]] if k in d), "")
    b = median(names[0], k)
    row = f"{k:42} {unit:8} {fmt(b):>9}"
    for n in names[1:]:
        v = median(n, k)
        r = f"{v / b:.2f}" if v is not None and b else "-"
        row += f" {fmt(v):>9} {r:>6}"
        if runs > 1:
            rs = []
            for dn, db in zip(rounds[n], rounds[names[0]]):
                x, y = num(dn.get(k, (None,))[0]), num(db.get(k, (None,))[0])
                if x is not None and y:
                    rs.append(x / y)
            w = (min(rs) if higher_better(unit, k) else max(rs)) if rs else None
            row += f" {w:>6.2f}" if w is not None else f" {'-':>6}"
    print(row)
PY
echo "raw results: $out" >&2
