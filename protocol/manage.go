package protocol

// The management side of the server: the counters behind `ocgate ctl show status` and /metrics, the stream of
// session events behind `show events`, the administrator's disconnect and terminate, and the configuration that
// a reload swaps in. Everything the management interface and the metrics read comes from here and from the
// session store (registry.go): one source, read at the moment it is asked for.
//
//	login.go     authSucceeded / authFailed      ─┐
//	server.go    handshakeDone, sessionEnded      ├─► serverStats ─► Status() ─► ctl, metrics
//	session.go   tunnelUp / tunnelDown            ─┘        └─► events ─► Subscribe() ─► ctl show events

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/config"
)

// LatencyBuckets are the upper bounds (seconds) of the handshake and login latency histograms.
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Histogram is a snapshot of a latency histogram: Counts[i] observations were <= LatencyBuckets[i]
// (cumulative), Count in all, summing to Sum seconds.
type Histogram struct {
	Counts []uint64
	Count  uint64
	Sum    float64
}

// latencyHist counts durations into LatencyBuckets. Safe for concurrent use, lock-free.
type latencyHist struct {
	buckets [11]atomic.Uint64 // len(LatencyBuckets); not cumulative
	count   atomic.Uint64
	sumNS   atomic.Int64
	maxNS   atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	sec := d.Seconds()
	for i, b := range LatencyBuckets {
		if sec <= b {
			h.buckets[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sumNS.Add(int64(d))
	for {
		m := h.maxNS.Load()
		if int64(d) <= m || h.maxNS.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

func (h *latencyHist) snapshot() Histogram {
	out := Histogram{Counts: make([]uint64, len(LatencyBuckets)), Count: h.count.Load(), Sum: time.Duration(h.sumNS.Load()).Seconds()}
	var cum uint64
	for i := range LatencyBuckets {
		cum += h.buckets[i].Load()
		out.Counts[i] = cum
	}
	return out
}

// serverStats are the server's cumulative counters since it started.
type serverStats struct {
	start time.Time

	authSuccess, authFailures         atomic.Uint64
	sessionsClosed                    atomic.Uint64 // sessions that ended
	timedOut, idleTimedOut, errClosed atomic.Uint64 // tunnels and sessions ended by a timeout / an error
	sessionTimeNS, maxSessionTimeNS   atomic.Int64
	dtlsFallbacks                     atomic.Uint64

	// Traffic of the sessions that ended (live sessions are added when asked).
	rxBytes, txBytes, rxPackets, txPackets atomic.Uint64

	handshake, login latencyHist

	mtuMu          sync.Mutex
	minMTU, maxMTU int // guarded by mtuMu

	evMu   sync.Mutex
	evSubs map[chan Event]struct{} // guarded by evMu
}

// Event is a session's connection, disconnection or end (`ocgate ctl show events`).
type Event struct {
	Type    string // "connect", "disconnect" (the tunnel went; the cookie stays valid) or "end"
	Reason  string // why it disconnected or ended
	Time    time.Time
	Session SessionInfo
}

// eventQueueLen bounds each subscriber's queue; a subscriber that does not keep up loses events.
const eventQueueLen = 64

func (st *serverStats) publish(ev Event) {
	st.evMu.Lock()
	defer st.evMu.Unlock()
	for ch := range st.evSubs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (st *serverStats) hasSubscribers() bool {
	st.evMu.Lock()
	defer st.evMu.Unlock()
	return len(st.evSubs) > 0
}

// tunnelUp records a tunnel that came up on sess with link MTU mtu.
func (st *serverStats) tunnelUp(sess *Session, mtu int) {
	st.mtuMu.Lock()
	if st.minMTU == 0 || mtu < st.minMTU {
		st.minMTU = mtu
	}
	st.maxMTU = max(st.maxMTU, mtu)
	st.mtuMu.Unlock()
	if st.hasSubscribers() {
		st.publish(Event{Type: "connect", Time: time.Now(), Session: sess.Info()})
	}
}

// tunnelDown records a tunnel of sess that ended with reason (tunnel.reason).
func (st *serverStats) tunnelDown(sess *Session, reason string) {
	switch {
	case strings.HasPrefix(reason, "DPD timeout"):
		st.timedOut.Add(1)
	case reason == "idle timeout":
		st.idleTimedOut.Add(1)
	case strings.HasPrefix(reason, "read error"), strings.HasPrefix(reason, "write error"),
		strings.HasPrefix(reason, "protocol error"):
		st.errClosed.Add(1)
	}
	if st.hasSubscribers() {
		st.publish(Event{Type: "disconnect", Reason: reason, Time: time.Now(), Session: sess.Info()})
	}
}

// sessionEnded records a session that ended for good.
func (st *serverStats) sessionEnded(sess *Session, reason string) {
	st.sessionsClosed.Add(1)
	if reason == "session timeout" {
		st.timedOut.Add(1)
	}
	d := int64(time.Since(sess.Created))
	st.sessionTimeNS.Add(d)
	for {
		m := st.maxSessionTimeNS.Load()
		if d <= m || st.maxSessionTimeNS.CompareAndSwap(m, d) {
			break
		}
	}
	rx, tx, rxp, txp := sess.Stats()
	st.rxBytes.Add(rx)
	st.txBytes.Add(tx)
	st.rxPackets.Add(rxp)
	st.txPackets.Add(txp)
	if st.hasSubscribers() {
		st.publish(Event{Type: "end", Reason: reason, Time: time.Now(), Session: sess.Info()})
	}
}

// Status is what `ocgate ctl show status` and /metrics report about the server.
type Status struct {
	Start          time.Time
	Sessions       int // sessions in the store (with a valid cookie)
	ActiveSessions int // sessions a tunnel carries now
	DTLSSessions   int // of those, carried over DTLS
	SessionsClosed uint64
	AuthSuccesses  uint64
	AuthFailures   uint64
	BannedIPs      int
	TimedOut       uint64 // DPD timeouts and session_timeout
	IdleTimedOut   uint64
	ErrorClosed    uint64
	DTLSFallbacks  uint64 // DTLS associations the server stopped sending on because they went quiet
	AvgAuthTime    time.Duration
	MaxAuthTime    time.Duration
	AvgSessionTime time.Duration // of the sessions that ended
	MaxSessionTime time.Duration
	// Traffic of every session since the start, the live ones included. rx = from the clients.
	RxBytes, TxBytes, RxPackets, TxPackets uint64
	MinMTU, MaxMTU                         int // of the tunnels since the start; 0 = none yet
	Handshake, Login                       Histogram
	Closing                                bool   // Shutdown has begun
	SharedState                            string // "" (no redis_url), "ok" or "degraded" (Redis unreachable)
}

// Status returns the server's counters now.
func (s *Server) Status() Status {
	st := &s.stats
	out := Status{
		Start: st.start, SessionsClosed: st.sessionsClosed.Load(), AuthSuccesses: st.authSuccess.Load(),
		AuthFailures: st.authFailures.Load(), TimedOut: st.timedOut.Load(), IdleTimedOut: st.idleTimedOut.Load(),
		ErrorClosed: st.errClosed.Load(), DTLSFallbacks: st.dtlsFallbacks.Load(),
		RxBytes: st.rxBytes.Load(), TxBytes: st.txBytes.Load(), RxPackets: st.rxPackets.Load(), TxPackets: st.txPackets.Load(),
		Handshake: st.handshake.snapshot(), Login: st.login.snapshot(), Closing: s.closing.Load(),
		MaxAuthTime: time.Duration(st.login.maxNS.Load()), MaxSessionTime: time.Duration(st.maxSessionTimeNS.Load()),
		SharedState: s.SharedState(),
	}
	if n := st.login.count.Load(); n > 0 {
		out.AvgAuthTime = time.Duration(st.login.sumNS.Load() / int64(n))
	}
	if out.SessionsClosed > 0 {
		out.AvgSessionTime = time.Duration(st.sessionTimeNS.Load() / int64(out.SessionsClosed))
	}
	st.mtuMu.Lock()
	out.MinMTU, out.MaxMTU = st.minMTU, st.maxMTU
	st.mtuMu.Unlock()
	for _, sess := range s.sessions.All() {
		out.Sessions++
		rx, tx, rxp, txp := sess.Stats()
		out.RxBytes += rx
		out.TxBytes += tx
		out.RxPackets += rxp
		out.TxPackets += txp
		if t := sess.cur.Load(); t != nil {
			out.ActiveSessions++
			if t.dtlsActive.Load() {
				out.DTLSSessions++
			}
		}
	}
	now := time.Now()
	for _, b := range s.bans.List(now) {
		if !b.BannedUntil.IsZero() {
			out.BannedIPs++
		}
	}
	return out
}

// SessionInfos returns a snapshot of every session, by ID.
func (s *Server) SessionInfos() []SessionInfo {
	all := s.sessions.All()
	out := make([]SessionInfo, 0, len(all))
	for _, sess := range all {
		out = append(out, sess.Info())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return int(a.ID - b.ID) })
	return out
}

// sessionByID returns the live session with that ID, or nil.
func (s *Server) sessionByID(id uint64) *Session {
	for _, sess := range s.sessions.All() {
		if sess.ID == id {
			return sess
		}
	}
	return nil
}

// Disconnect closes the tunnel of session id without a word to the client, as ocserv's `occtl disconnect`
// does: the session and its cookie stay, and the client reconnects with it. It reports whether the session
// exists.
func (s *Server) Disconnect(id uint64) bool {
	sess := s.sessionByID(id)
	if sess == nil {
		return false
	}
	if t := sess.cur.Load(); t != nil {
		t.end("disconnected by the administrator", noFrame)
	}
	return true
}

// Terminate ends session id for good: the client is told (DISCONNECT) and the cookie stops working. It reports
// whether the session existed.
func (s *Server) Terminate(id uint64) bool {
	sess := s.sessionByID(id)
	if sess == nil {
		return false
	}
	s.endSession(sess, "terminated by the administrator")
	return true
}

// Subscribe returns a channel of session events and the function that ends the subscription. Events are dropped
// for a subscriber whose queue is full.
func (s *Server) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, eventQueueLen)
	st := &s.stats
	st.evMu.Lock()
	if st.evSubs == nil {
		st.evSubs = make(map[chan Event]struct{})
	}
	st.evSubs[ch] = struct{}{}
	st.evMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			st.evMu.Lock()
			delete(st.evSubs, ch)
			st.evMu.Unlock()
		})
	}
}

// SetConfig swaps in a reloaded configuration. New logins take their per-user configuration (routes, DNS,
// timeouts, limits, the per-user and per-group files) from it, and new CONNECTs their banner, default domain and
// split DNS; live sessions keep what they got. Every other key keeps its value from the start (a restart applies
// it): SetConfig does not change listeners, pools, the datapath, bans or max_clients.
func (s *Server) SetConfig(c *config.Config) { s.live.Store(c) }

// Config returns the configuration in effect for new sessions.
func (s *Server) Config() *config.Config { return s.conf() }

// conf is the configuration new sessions take: the last SetConfig's, else the one the server started with.
func (s *Server) conf() *config.Config {
	if c := s.live.Load(); c != nil {
		return c
	}
	return s.cfg
}

// Ready reports whether the server takes new sessions: it serves a listener, is not shutting down, is below
// max_clients, and its shared state answers (unless redis_unavailable = "local").
func (s *Server) Ready() bool {
	if s.closing.Load() {
		return false
	}
	if s.SharedState() == "degraded" && s.conf().RedisUnavailable != "local" {
		return false
	}
	s.mu.Lock()
	listening, conns := len(s.listeners) > 0, len(s.conns)
	s.mu.Unlock()
	if n := s.conf().MaxClients; n > 0 && (conns >= n || s.sessions.Len() >= n) {
		return false
	}
	return listening
}
