#!/usr/bin/env bash
# integration/bench/ocserv-baseline.sh — VPN server with the stock openconnect client on a kernel TUN (netns ocb-cli).
# Server: ocserv by default; another server drops in with BENCH_SERVER=path/to/adapter.sh (see servers/ocserv.sh).
# Figures (printed at the end, one "name value unit" line each):
#   connect_{ip,firstbyte,dtls,configured}_ms  median of N launches: openconnect start → TUN has its IP (polled) /
#                                  first HTTP reply through the tunnel from the target (polled) / "Established DTLS
#                                  connection" and "Configured as" lines (stamped as they arrive on a pipe)
#   tun_{dtls,tls}_tcp_{up,down}   iperf3 TCP, client → 10.77.0.1 (up) and -R (down), DURATION s each
#   tun_dtls_udp_{up,down}         iperf3 UDP at UDP_RATE, 1200-byte datagrams: received Mbit/s and loss %
#   *_cpu_ROLE, *_cpu_ROLE_sys     CPU of each server process / the client during that run, % of one core (all, and
#                                  the part in the kernel: system calls, where sends and device writes run);
#   *_cpu_machine                  whole machine busy during that run, % of all cores
#   rss_ROLE / pss_ROLE            memory of each server process with one client connected (KiB)
# Env: DURATION (10), CONNECT_RUNS (5), UDP_RATE (300M), BENCH_MODES ("dtls tls"; "tls" skips the DTLS runs),
#      UDP_ROWS (1; 0 skips the fixed-rate UDP rows).
. "$(dirname "$0")/lib.sh"
need ip openconnect iperf3 ocpasswd openssl python3 curl
DURATION=${DURATION:-10}
CONNECT_RUNS=${CONNECT_RUNS:-5}
UDP_RATE=${UDP_RATE:-300M}
INFO=()
info() { INFO+=("# $*"); log "info: $*"; }

netns_up; certs; users; tun_script; load_server
info "server $(srv_name) $(srv_version); client $(openconnect --version 2>&1 | awk 'NR==1 {print $3}')"
srv_start
bg "$SNS" iperf3 -s -B "$TARGET"
# A tiny HTTP server as the "first byte through the tunnel" probe (works whether or not the server answers ICMP).
mkdir -p "$W/probe"; echo ok >"$W/probe/index.html"
bg "$SNS" python3 -m http.server 8002 --bind "$TARGET" --directory "$W/probe"
wait_for 10 tcp_open "$SNS" "$TARGET" 8002 || fail "probe http.server did not start"
tun_probe() { ip netns exec "$CNS" curl -s -m 0.5 -o /dev/null "http://$TARGET:8002/"; }
has_mode() { case " $BENCH_MODES " in *" $1 "*) return 0 ;; esac; return 1; }
wait_for 10 tcp_open "$SNS" "$TARGET" 5201 || fail "iperf3 server did not start"

no_workers() { [ "$(srv_procs | awk '$1 == "worker"' | wc -l)" -eq 0 ]; }

# (a) connect latency
connect_once() { # sets T_IP T_PING (polled) and T_DTLS T_CONF (from the stamped log), ms since launch
  local logf=$W/connect.log t0 now
  T_IP=; T_PING=
  t0=$(now_ms)
  STAMP_T0=$t0 oc_tun "$logf"
  while [ -z "$T_PING" ]; do
    now=$(now_ms)
    [ $((now - t0)) -gt 30000 ] && { tail -20 "$logf" >&2; fail "connect timed out"; }
    gone "$CLI_PID" && { tail -20 "$logf" >&2; fail "openconnect exited"; }
    if [ -z "$T_IP" ]; then tun_has_ip && T_IP=$(($(now_ms) - t0)) || sleep 0.005; continue; fi
    tun_probe && T_PING=$(($(now_ms) - t0))
  done
  T_DTLS=0
  if has_mode dtls; then
    wait_for 10 dtls_up "$logf" || fail "no DTLS"
    T_DTLS=$(line_ms "$logf" 'Established DTLS connection')
  fi
  T_CONF=$(line_ms "$logf" '(Configured|Connected) as ')
  stop_client
  wait_for 10 no_workers || log "warning: server worker still present after disconnect"
}
ips=(); pings=(); dtlss=(); confs=()
for i in $(seq 1 "$CONNECT_RUNS"); do
  connect_once
  log "connect $i: ip ${T_IP} ms, ping ${T_PING} ms, dtls ${T_DTLS} ms, configured ${T_CONF} ms"
  ips+=("$T_IP"); pings+=("$T_PING"); dtlss+=("$T_DTLS"); confs+=("$T_CONF")
done
info "connect runs (ms): ip ${ips[*]} | ping ${pings[*]} | dtls ${dtlss[*]} | configured ${confs[*]}"
result connect_ip_ms "$(median "${ips[@]}")" ms
result connect_firstbyte_ms "$(median "${pings[@]}")" ms
result connect_dtls_ms "$(median "${dtlss[@]}")" ms
result connect_configured_ms "$(median "${confs[@]}")" ms

# connect for throughput; MODE dtls|tls
tun_session() {
  local mode=$1; shift
  local logf=$W/client-$mode.log
  oc_tun "$logf" "$@"
  wait_for 30 connected "$logf" || { tail -20 "$logf" >&2; fail "$mode: client did not connect"; }
  if [ "$mode" = dtls ]; then wait_for 10 dtls_up "$logf" || fail "dtls: no DTLS"; fi
  wait_for 10 tun_probe || fail "$mode: no first byte through the tunnel"
  info "$mode: $(session_info "$logf")"
}

if has_mode dtls; then
tun_session dtls
# (e) memory with one client connected
while read -r role pid; do
  result "rss_$role" "$(rss_kib "$pid")" KiB
  result "pss_$role" "$(pss_kib "$pid")" KiB
done < <(srv_procs)
# (b) TCP over DTLS, (f) CPU during it
d0=$(udp_rcvbuf_errors "$CNS")
cpu_during "$(cpu_specs)" iperf_to "$W/dtls-up.json" -c "$TARGET" -t "$DURATION" || fail "iperf3 dtls up"
result tun_dtls_tcp_up "$(tcp_mbps "$W/dtls-up.json")" Mbit/s; record_cpu tun_dtls_tcp_up
d1=$(udp_rcvbuf_errors "$CNS")
cpu_during "$(cpu_specs)" iperf_to "$W/dtls-down.json" -c "$TARGET" -t "$DURATION" -R || fail "iperf3 dtls down"
result tun_dtls_tcp_down "$(tcp_mbps "$W/dtls-down.json")" Mbit/s; record_cpu tun_dtls_tcp_down
d2=$(udp_rcvbuf_errors "$CNS")
# Datagrams the client's UDP socket dropped (receive buffer full) during each row: each is a lost TCP segment.
result tun_dtls_tcp_down_client_drops $((d2 - d1)) datagrams
info "server UDP receive-buffer drops during dtls up: $(( $(udp_rcvbuf_errors "$SNS") ))"
# (d) UDP at a fixed rate (UDP_ROWS=0 skips it)
if [ "${UDP_ROWS:-1}" != 0 ]; then
iperf_to "$W/udp-up.json" -c "$TARGET" -u -b "$UDP_RATE" -l 1200 -t "$DURATION" || fail "iperf3 udp up"
result tun_dtls_udp_up "$(udp_mbps "$W/udp-up.json")" Mbit/s; result tun_dtls_udp_up_loss "$(udp_loss "$W/udp-up.json")" %
iperf_to "$W/udp-down.json" -c "$TARGET" -u -b "$UDP_RATE" -l 1200 -t "$DURATION" -R || fail "iperf3 udp down"
result tun_dtls_udp_down "$(udp_mbps "$W/udp-down.json")" Mbit/s; result tun_dtls_udp_down_loss "$(udp_loss "$W/udp-down.json")" %
fi
stop_client
fi

# (c) TLS only
tun_session tls --no-dtls
if ! has_mode dtls; then
  while read -r role pid; do
    result "rss_$role" "$(rss_kib "$pid")" KiB
    result "pss_$role" "$(pss_kib "$pid")" KiB
  done < <(srv_procs)
fi
cpu_during "$(cpu_specs)" iperf_to "$W/tls-up.json" -c "$TARGET" -t "$DURATION" || fail "iperf3 tls up"
result tun_tls_tcp_up "$(tcp_mbps "$W/tls-up.json")" Mbit/s; record_cpu tun_tls_tcp_up
cpu_during "$(cpu_specs)" iperf_to "$W/tls-down.json" -c "$TARGET" -t "$DURATION" -R || fail "iperf3 tls down"
result tun_tls_tcp_down "$(tcp_mbps "$W/tls-down.json")" Mbit/s; record_cpu tun_tls_tcp_down
stop_client

printf '%s\n' "${INFO[@]}"
print_results
