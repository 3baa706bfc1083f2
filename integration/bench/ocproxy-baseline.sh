#!/usr/bin/env bash
# bench/ocproxy-baseline.sh — the unprivileged client path: openconnect --script-tun --script "ocproxy -D PORT"
# (no TUN; ocproxy's lwIP stack terminates the tunnel and offers SOCKS5 on 127.0.0.1:PORT in ocb-cli).
# Server: ocserv by default; BENCH_SERVER=path/to/adapter.sh drops another in (see servers/ocserv.sh).
# Target: a FILE_MB MiB random file served by `python3 -m http.server` on 10.77.0.1:8000 (ocb-srv), and an upload
# sink (PUT, discards) on 10.77.0.1:8001.
# Figures (one "name value unit" line each, at the end):
#   proxy_connect_ms              median of N: openconnect launch → "Configured as" line (stamped on arrival)
#   proxy_socks_ms                median of N: openconnect launch → SOCKS port accepts (polled)
#   http_direct_down              curl straight to the target inside ocb-srv (no VPN): ceiling of curl+http.server
#   proxy_{dtls,tls}_http_down    curl --socks5-hostname download of the file, Mbit/s (speed_download*8/1e6)
#   proxy_{dtls,tls}_http_up      curl -T upload of the file to the sink, Mbit/s
#   *_cpu_ROLE                    CPU per process during that transfer, % of one core; *_cpu_machine: % of all cores
# Env: FILE_MB (200), CONNECT_RUNS (5), SOCKS (11080).
. "$(dirname "$0")/lib.sh"
need ip openconnect ocproxy curl ocpasswd openssl python3
FILE_MB=${FILE_MB:-200}
CONNECT_RUNS=${CONNECT_RUNS:-5}
SOCKS=${SOCKS:-11080}
INFO=()
info() { INFO+=("# $*"); log "info: $*"; }

netns_up; certs; users; load_server
info "server $(srv_name) $(srv_version); client $(openconnect --version 2>&1 | awk 'NR==1 {print $3}'); ocproxy $(dpkg-query -W -f='${Version}' ocproxy 2>/dev/null || echo '?')"
srv_start

mkdir -p "$W/www"
head -c "$((FILE_MB * 1048576))" /dev/urandom >"$W/www/blob"
SIZE=$(stat -c %s "$W/www/blob")
bg "$SNS" python3 -m http.server 8000 --bind "$TARGET" --directory "$W/www"
HTTPD=$LAST_PID
cat >"$W/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        n, left = 0, int(self.headers.get('Content-Length', 0))
        while left > 0:
            b = self.rfile.read(min(left, 1 << 16))
            if not b: break
            n += len(b); left -= len(b)
        body = str(n).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
PY
bg "$SNS" python3 "$W/sink.py" "$TARGET" 8001
SINK=$LAST_PID
wait_for 10 tcp_open "$SNS" "$TARGET" 8000 || fail "http.server did not start"
wait_for 10 tcp_open "$SNS" "$TARGET" 8001 || fail "upload sink did not start"

socks_up() { tcp_open "$CNS" 127.0.0.1 "$SOCKS"; }
socks_down() { ! socks_up; }
bps_to_mbps() { python3 -c "import sys; print(round(float(sys.argv[1])*8/1e6))" "$1"; }

# ceiling of curl + http.server alone (inside ocb-srv, no VPN)
out=$(ip netns exec "$SNS" curl -s -o /dev/null -w '%{speed_download} %{size_download}' "http://$TARGET:8000/blob")
[ "${out#* }" = "$SIZE" ] || fail "direct download incomplete: $out"
result http_direct_down "$(bps_to_mbps "${out%% *}")" Mbit/s

# connect latency in proxy mode
conn=(); socks=()
for i in $(seq 1 "$CONNECT_RUNS"); do
  logf=$W/connect.log; ts=
  t0=$(now_ms)
  STAMP_T0=$t0 oc_proxy "$logf" "$SOCKS"
  while [ -z "$ts" ]; do
    [ $(($(now_ms) - t0)) -gt 30000 ] && { tail -20 "$logf" >&2; fail "proxy connect timed out"; }
    gone "$CLI_PID" && { tail -20 "$logf" >&2; fail "openconnect exited"; }
    socks_up && ts=$(($(now_ms) - t0)) || sleep 0.005
  done
  wait_for 10 connected "$logf" || fail "no Configured line"
  tc=$(line_ms "$logf" '(Configured|Connected) as ')
  stop_client
  wait_for 10 socks_down || fail "ocproxy still listening after the client stopped"
  log "proxy connect $i: configured ${tc} ms, socks ${ts} ms"
  conn+=("$tc"); socks+=("$ts")
done
info "proxy connect runs (ms): configured ${conn[*]} | socks ${socks[*]}"
result proxy_connect_ms "$(median "${conn[@]}")" ms
result proxy_socks_ms "$(median "${socks[@]}")" ms

fetch_down() { # sets OUT
  OUT=$(ip netns exec "$CNS" curl -s --max-time 300 --socks5-hostname "127.0.0.1:$SOCKS" -o /dev/null \
    -w '%{speed_download} %{size_download}' "http://$TARGET:8000/blob")
}
put_up() { # sets OUT
  OUT=$(ip netns exec "$CNS" curl -s --max-time 300 --socks5-hostname "127.0.0.1:$SOCKS" -T "$W/www/blob" \
    -o "$W/put.out" -w '%{speed_upload} %{size_upload}' "http://$TARGET:8001/blob")
}
proxy_run() { # MODE [openconnect args]
  local mode=$1 logf=$W/client-$1.log p proxy_pid=
  shift
  oc_proxy "$logf" "$SOCKS" "$@"
  wait_for 30 connected "$logf" || { tail -20 "$logf" >&2; fail "$mode: client did not connect"; }
  if [ "$mode" = dtls ]; then wait_for 10 dtls_up "$logf" || fail "dtls: no DTLS"; fi
  wait_for 10 socks_up || fail "$mode: ocproxy did not listen"
  for p in $(ip netns pids "$CNS"); do grep -qx ocproxy "/proc/$p/comm" 2>/dev/null && proxy_pid=$p; done
  info "$mode: $(session_info "$logf")"
  cpu_during "$(cpu_specs "ocproxy:$proxy_pid" "httpd:$HTTPD")" fetch_down || fail "$mode: download failed"
  [ "${OUT#* }" = "$SIZE" ] || fail "$mode: download incomplete: $OUT"
  result "proxy_${mode}_http_down" "$(bps_to_mbps "${OUT%% *}")" Mbit/s; record_cpu "proxy_${mode}_http_down"
  cpu_during "$(cpu_specs "ocproxy:$proxy_pid" "sink:$SINK")" put_up || fail "$mode: upload failed"
  [ "$(cat "$W/put.out")" = "$SIZE" ] || fail "$mode: upload incomplete: $OUT / $(cat "$W/put.out")"
  result "proxy_${mode}_http_up" "$(bps_to_mbps "${OUT%% *}")" Mbit/s; record_cpu "proxy_${mode}_http_up"
  stop_client
}
case " $BENCH_MODES " in *" dtls "*) proxy_run dtls ;; esac
proxy_run tls --no-dtls

printf '%s\n' "${INFO[@]}"
print_results
