package netstack

// Bounds on the work one session can make the server do with the built-in DNS and ICMP echo, so that a user who
// floods them cannot grow the server's memory or starve other users:
//
//	DNS flows        at most maxDNSFlowsPerSession UDP flows and TCP connections to the gateway's port 53 at once;
//	                 each answers its queries one at a time, so that is also the session's queries in flight. A new
//	                 flow over the cap is dropped (UDP) or reset (TCP).
//	DNS rate         dnsRate queries a second per session, dnsBurst at once; queries over it are dropped unanswered
//	                 (a real resolver retries), before any upstream work.
//	DNS queues       each UDP flow's receive buffer in the stack is dnsRcvBuf bytes, so queries that arrive while the
//	                 flow waits for the upstream queue there boundedly (gVisor's default let 40-byte queries
//	                 take ~5.7 MB per flow) and the rest are dropped by the stack.
//	ICMP echo        a session holds at most maxEchoPerSession echo requests in flight, and never more than its
//	                 fair share of the server's maxEchoServer slots: maxEchoServer divided among the sessions that
//	                 hold slots, and the last echoReserve slots only to a session's first request, so sessions
//	                 pinging black holes (each echo holds its slot for echoTimeout) leave room for everyone else's.
//
// Each refusal is counted (Stats.DNSRefused, Stats.EchoRefused) and logged at most once a minute per session.

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

const (
	maxDNSFlowsPerSession = 8
	dnsRate               = 100 // queries per second, per session
	dnsBurst              = 200
	dnsRcvBuf             = 16 << 10
	abuseLogEvery         = time.Minute
)

// sessionLimits is a port's share of the bounds above; its zero value is ready.
type sessionLimits struct {
	dnsFlows atomic.Int32
	dnsOnce  sync.Once
	dnsRate  *rate.Limiter // set by dnsOnce
	lastLog  atomic.Int64  // unix nanoseconds of the last refusal logged

	refusedOnce  sync.Once
	refusedLog   *rate.Limiter // set by refusedOnce: refused flows logged (flowlog.go)
	refusedQuiet atomic.Int64  // refused flows not logged since the last line
}

// acquireDNSFlow takes one of the session's DNS flows, or counts a refusal.
func (p *port) acquireDNSFlow() bool {
	if p.lim.dnsFlows.Add(1) > maxDNSFlowsPerSession {
		p.lim.dnsFlows.Add(-1)
		p.refuseAbuse(&p.s.stats.dnsRefused, "DNS flows over the per-session cap", "cap", maxDNSFlowsPerSession)
		return false
	}
	return true
}

func (p *port) releaseDNSFlow() { p.lim.dnsFlows.Add(-1) }

// allowDNSQuery takes one query from the session's rate, or counts a refusal.
func (p *port) allowDNSQuery() bool {
	p.lim.dnsOnce.Do(func() { p.lim.dnsRate = rate.NewLimiter(dnsRate, dnsBurst) })
	if !p.lim.dnsRate.Allow() {
		p.refuseAbuse(&p.s.stats.dnsRefused, "DNS queries over the per-session rate", "per_second", dnsRate)
		return false
	}
	return true
}

// refuseAbuse counts a refusal in c and logs it, at most once every abuseLogEvery per session.
func (p *port) refuseAbuse(c *atomic.Uint64, what string, args ...any) {
	c.Add(1)
	now := time.Now().UnixNano()
	last := p.lim.lastLog.Load()
	if now-last < int64(abuseLogEvery) || !p.lim.lastLog.CompareAndSwap(last, now) {
		return
	}
	p.s.log.Info("session refused: "+what+" (logged once a minute)", append([]any{"user", p.sess.User, "addr", p.sess.Addrs[0]}, args...)...)
}

// contain ends a flow's goroutine that panicked (deferred first in each): the flow is lost, logged with its stack,
// and the server and every other flow go on.
func (s *Stack) contain(p *port, what string) {
	if r := recover(); r != nil {
		s.log.Error("panic in a "+what+"; that flow is dropped", "user", p.sess.User, "panic", r, "stack", string(debug.Stack()))
	}
}
