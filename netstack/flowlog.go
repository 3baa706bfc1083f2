package netstack

// The flow log (flow_log, off by default): one JSON line per flow that ended or was refused, for audit and
// debugging. Lines are written whole under a lock; a failing writer loses lines, never flows.
//
// Independently of it, a flow the egress policy refuses is logged at info (logRefused), rate-limited per session
// (refusedLogBurst lines, then one every refusedLogEvery, with the count of those left out), so that a user who wonders why a destination does
// not answer finds it in the server's log at the default level, and a client cannot flood that log.

import (
	"encoding/json"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// FlowRecord is one line of the flow log.
type FlowRecord struct {
	Time       time.Time `json:"time"`             // when the flow ended or was refused
	User       string    `json:"user"`             // the session's user
	Session    uint64    `json:"session"`          // the session's ID
	Proto      string    `json:"proto"`            // "tcp" or "udp"
	Src        string    `json:"src"`              // client address:port (inside the tunnel)
	Dst        string    `json:"dst"`              // destination address:port
	BytesUp    int64     `json:"bytes_up"`         // client → destination
	BytesDown  int64     `json:"bytes_down"`       // destination → client
	DurationMS int64     `json:"duration_ms"`      // from the first packet to the end
	Verdict    string    `json:"verdict"`          // "ended", "refused" or "failed"
	Reason     string    `json:"reason,omitempty"` // why it was refused or failed
}

// A session's refused flows are logged refusedLogBurst at once, then one every refusedLogEvery.
const (
	refusedLogBurst = 10
	refusedLogEvery = 6 * time.Second
)

// logRefused logs a flow the egress policy refused, rate-limited per session.
func (s *Stack) logRefused(p *port, proto string, src netip.Addr, dst netip.AddrPort, why string) {
	p.lim.refusedOnce.Do(func() { p.lim.refusedLog = rate.NewLimiter(rate.Every(refusedLogEvery), refusedLogBurst) })
	if !p.lim.refusedLog.Allow() {
		p.lim.refusedQuiet.Add(1)
		return
	}
	args := []any{"user", p.sess.User, "proto", proto, "src", src, "dst", dst, "why", why,
		"change", "route, egress_allow, egress_deny"}
	if n := p.lim.refusedQuiet.Swap(0); n > 0 {
		args = append(args, "more_refused_not_logged", n)
	}
	s.log.Info("flow refused by the egress policy", args...)
}

// logFlow writes one record when the flow log is on.
func (s *Stack) logFlow(p *port, proto string, src, dst netip.AddrPort, start time.Time, up, down int64, verdict, reason string) {
	if s.cfg.FlowLog == nil {
		return
	}
	now := time.Now()
	rec := FlowRecord{Time: now.UTC(), User: p.sess.User, Session: p.sess.ID, Proto: proto, Src: src.String(),
		Dst: dst.String(), BytesUp: up, BytesDown: down, DurationMS: now.Sub(start).Milliseconds(), Verdict: verdict,
		Reason: reason}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	b = append(b, '\n')
	s.flowMu.Lock()
	s.cfg.FlowLog.Write(b)
	s.flowMu.Unlock()
}
