// Package metrics serves Prometheus /metrics, /healthz and /readyz. Every value is read from the server at scrape
// time (protocol.Server's Status and session list, the netstack's counters): the same source as `ocgate ctl`,
// no second set of counters.
package metrics

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ocgate/protocol"
)

// Source is what the metrics read.
type Source interface {
	Status() protocol.Status
	SessionInfos() []protocol.SessionInfo
	Ready() bool
	SharedState() string // "" (no redis_url), "ok" or "degraded"
}

// FlowStats are the datapath's flow counters (netstack only).
type FlowStats struct {
	TCPFlows, UDPFlows                 uint64
	RefusedPolicy, RefusedLimit        uint64
	RefusedHalfOpen, RefusedDials      uint64
	RefusedPorts, RefusedHostFlows     uint64
	DNSRefused, EchoRefused, DeniedC2C uint64
	DroppedSpoofed, DroppedMalformed   uint64
}

// Options configure the handler.
type Options struct {
	Source   Source
	Datapath string           // label of the session gauge
	Flows    func() FlowStats // nil: no flow metrics (kernel-TUN datapath)
	Draining func() bool      // true: /readyz says not ready (SIGTERM drain)
}

// Handler returns the mux serving /metrics, /healthz and /readyz.
func Handler(o Options) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{o: o})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case o.Draining != nil && o.Draining():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !o.Source.Ready():
			msg := "not ready"
			if o.Source.SharedState() == "degraded" {
				msg = "not ready: shared state (Redis) unreachable, logins refused (redis_unavailable = refuse)"
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
		case o.Source.SharedState() == "degraded":
			w.Write([]byte("ready; shared state (Redis) unreachable: logins served by this instance alone\n"))
		default:
			w.Write([]byte("ready\n"))
		}
	})
	return mux
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("ocgate_"+name, help, labels, nil)
}

var (
	dSessions      = desc("sessions", "Sessions by channel (tls, dtls, none: waiting for a reconnect with the cookie).", "channel", "datapath")
	dSessionsEnded = desc("sessions_ended_total", "Sessions that ended.")
	dAuth          = desc("auth_total", "Login attempts by method and result.", "method", "result")
	dBans          = desc("banned_ips", "Addresses banned now.")
	dBytes         = desc("bytes_total", "Tunnel payload bytes (rx: from clients, tx: to clients).", "direction")
	dPackets       = desc("packets_total", "Tunnel packets (rx: from clients, tx: to clients).", "direction")
	dDTLSFallback  = desc("dtls_fallbacks_total", "Times a session's sending moved from a quiet DTLS channel to TLS.")
	dTimeouts      = desc("tunnels_closed_total", "Tunnels and sessions closed by a timeout or an error.", "reason")
	dHandshake     = desc("tls_handshake_seconds", "TLS handshake latency.")
	dLogin         = desc("login_seconds", "Password check latency of successful logins.")
	dFlows         = desc("flows_total", "Flows opened by the netstack datapath.", "proto")
	dRefused       = desc("flows_refused_total", "Flows and packets refused by the netstack datapath, by reason.", "reason")
	dReady         = desc("ready", "1 when the server takes new sessions.")
	dSharedUp      = desc("shared_state_up", "With redis_url: 1 while Redis answers, 0 while it does not (degraded).")
)

type collector struct{ o Options }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dSessions, dSessionsEnded, dAuth, dBans, dBytes, dPackets, dDTLSFallback,
		dTimeouts, dHandshake, dLogin, dFlows, dRefused, dReady, dSharedUp} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.o.Source.Status()
	byChannel := map[string]int{"tls": 0, "dtls": 0, "none": 0}
	for _, in := range c.o.Source.SessionInfos() {
		switch ch := strings.ToLower(in.Channel); ch {
		case "cstp":
			byChannel["tls"]++
		case "dtls":
			byChannel["dtls"]++
		default:
			byChannel["none"]++
		}
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for k, n := range byChannel {
		gauge(dSessions, float64(n), k, c.o.Datapath)
	}
	counter(dSessionsEnded, st.SessionsClosed)
	counter(dAuth, st.AuthSuccesses, "password", "success")
	counter(dAuth, st.AuthFailures, "password", "failure")
	gauge(dBans, float64(st.BannedIPs))
	counter(dBytes, st.RxBytes, "rx")
	counter(dBytes, st.TxBytes, "tx")
	counter(dPackets, st.RxPackets, "rx")
	counter(dPackets, st.TxPackets, "tx")
	counter(dDTLSFallback, st.DTLSFallbacks)
	counter(dTimeouts, st.TimedOut, "timeout")
	counter(dTimeouts, st.IdleTimedOut, "idle")
	counter(dTimeouts, st.ErrorClosed, "error")
	for _, h := range []struct {
		d *prometheus.Desc
		h protocol.Histogram
	}{{dHandshake, st.Handshake}, {dLogin, st.Login}} {
		buckets := make(map[float64]uint64, len(protocol.LatencyBuckets))
		for i, b := range protocol.LatencyBuckets {
			buckets[b] = h.h.Counts[i]
		}
		ch <- prometheus.MustNewConstHistogram(h.d, h.h.Count, h.h.Sum, buckets)
	}
	ready := 0.0
	if c.o.Source.Ready() && (c.o.Draining == nil || !c.o.Draining()) {
		ready = 1
	}
	gauge(dReady, ready)
	switch st.SharedState {
	case "ok":
		gauge(dSharedUp, 1)
	case "degraded":
		gauge(dSharedUp, 0)
	}
	if c.o.Flows == nil {
		return
	}
	f := c.o.Flows()
	counter(dFlows, f.TCPFlows, "tcp")
	counter(dFlows, f.UDPFlows, "udp")
	for reason, v := range map[string]uint64{
		"policy": f.RefusedPolicy, "session_limit": f.RefusedLimit, "half_open": f.RefusedHalfOpen,
		"dials": f.RefusedDials, "ports": f.RefusedPorts, "host_flows": f.RefusedHostFlows, "dns_abuse": f.DNSRefused,
		"echo_abuse": f.EchoRefused, "client_to_client": f.DeniedC2C, "spoofed": f.DroppedSpoofed,
		"malformed": f.DroppedMalformed,
	} {
		counter(dRefused, v, reason)
	}
}
