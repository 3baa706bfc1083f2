package protocol

// Accounting of sessions (auth.Accounting, RADIUS's acct) and what the authentication server assigned to them
// (auth.Grants):
//
//	login        newSession: applyGrants — Framed-IP-Address, Framed-Route, Session-Timeout, Idle-Timeout
//	             override the user's configuration; Framed-IPv6-Address or -Prefix is leased at the first
//	             CONNECT (Session.attach, Pool6.AcquirePrefix) when the client takes IPv6
//	first CONNECT attachTunnel ─► acctStart: Start, waited for; no answer ends the session and refuses the
//	             CONNECT (as ocserv) ─► an Interim-Update every Acct-Interim-Interval, in the background
//	end          endSession ─► acctStop: Stop with the counters, the duration and the cause, in the background,
//	             retried; Shutdown waits for it
//
// The accounting client bounds each request itself (radius_timeout × radius_retries per server); the rounds
// here are on top of that, for a Stop or Interim-Update whose every server was down at that moment.

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"ocgate/auth"
	"ocgate/config"
)

const (
	acctMaxWait  = 2 * time.Minute // bound on one Send, whatever the accounting client's own timeouts
	acctRounds   = 3               // Stop and Interim-Update: sends before giving up
	acctRetryGap = 5 * time.Second // between rounds
)

// applyGrants lets what the authentication server assigned override the user's configuration. A
// Framed-IP-Address must lie in the pool (it is leased like explicit_ipv4); Framed-Route entries are added to the
// routes pushed to the client.
func applyGrants(uc *config.UserConfig, g auth.Grants) {
	if g.IPv4.IsValid() {
		uc.ExplicitIPv4 = g.IPv4
	}
	if len(g.Routes) > 0 {
		uc.Routes = append(append([]netip.Prefix(nil), uc.Routes...), g.Routes...)
	}
	if g.SessionTimeout > 0 {
		uc.SessionTimeout = g.SessionTimeout
	}
	if g.IdleTimeout > 0 {
		uc.IdleTimeout, uc.MobileIdleTimeout = g.IdleTimeout, g.IdleTimeout
	}
}

// acctRecord is sess's accounting record now.
func (s *Server) acctRecord(sess *Session, status auth.AcctStatus) auth.AcctRecord {
	sess.mu.Lock()
	r := auth.AcctRecord{Status: status, SessionID: sess.acctID(), User: sess.User, Remote: sess.remote.Addr(),
		IPv4: sess.addr, IPv6: sess.addr6, Class: sess.grants.Class}
	if !sess.connectedAt.IsZero() {
		r.Duration = time.Since(sess.connectedAt)
	}
	sess.mu.Unlock()
	r.RxBytes, r.TxBytes, r.RxPackets, r.TxPackets = sess.Stats()
	return r
}

// acctID is the session's Acct-Session-Id: the one its RADIUS login was sent with, else one made of its ID and
// creation time (unique across restarts).
func (sess *Session) acctID() string {
	if id := sess.grants.AcctSessionID; id != "" {
		return id
	}
	return strconv.FormatInt(sess.Created.Unix(), 16) + "-" + strconv.FormatUint(sess.ID, 16)
}

// acctStart sends Start for the first tunnel of sess and waits for the answer. false: no server answered; the
// session has ended and the client has been told.
func (s *Server) acctStart(st *connState, sess *Session) bool {
	if s.acct == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), acctMaxWait)
	defer cancel()
	if err := s.acct.Send(ctx, s.acctRecord(sess, auth.AcctStart)); err != nil {
		s.log.Error("accounting start failed; session refused", "id", sess.ID, "user", sess.User, "err", err)
		s.endSession(sess, "accounting failed")
		s.refuse(st, 401, "Cookie is not acceptable", "accounting failed")
		return false
	}
	sess.mu.Lock()
	sess.acctStarted = true
	if d := sess.grants.InterimInterval; d > 0 && !sess.ended {
		sess.acctTimer = time.AfterFunc(d, func() { s.acctInterim(sess, d) })
	}
	sess.mu.Unlock()
	return true
}

// acctInterim sends an Interim-Update for sess and schedules the next one every d.
func (s *Server) acctInterim(sess *Session, d time.Duration) {
	sess.mu.Lock()
	if sess.ended {
		sess.mu.Unlock()
		return
	}
	s.acctWG.Add(1)
	sess.acctTimer = time.AfterFunc(d, func() { s.acctInterim(sess, d) })
	sess.mu.Unlock()
	defer s.acctWG.Done()
	s.acctSend(sess, s.acctRecord(sess, auth.AcctInterim), 1)
}

// acctStop sends Stop for sess, which has ended, in the background.
func (s *Server) acctStop(sess *Session, reason string) {
	sess.mu.Lock()
	started := sess.acctStarted
	sess.mu.Unlock()
	if s.acct == nil || !started {
		return
	}
	r := s.acctRecord(sess, auth.AcctStop)
	r.Cause = terminateCause(reason, s.closing.Load())
	s.acctWG.Add(1)
	go func() {
		defer s.acctWG.Done()
		s.acctSend(sess, r, acctRounds)
	}()
}

// acctSend sends r, in up to rounds rounds, and logs a failure.
func (s *Server) acctSend(sess *Session, r auth.AcctRecord, rounds int) {
	var err error
	for i := range rounds {
		if i > 0 {
			time.Sleep(acctRetryGap)
		}
		ctx, cancel := context.WithTimeout(context.Background(), acctMaxWait)
		err = s.acct.Send(ctx, r)
		cancel()
		if err == nil {
			return
		}
	}
	s.log.Warn("accounting failed", "status", r.Status, "id", sess.ID, "user", sess.User, "err", err)
}

// terminateCause maps endSession's reasons to Acct-Terminate-Cause.
func terminateCause(reason string, shutdown bool) auth.TerminateCause {
	switch {
	case shutdown:
		return auth.CauseAdminReboot
	case reason == "user logged out":
		return auth.CauseUserRequest
	case reason == "session timeout":
		return auth.CauseSessionTimeout
	case reason == "cookie expired":
		return auth.CauseLostCarrier
	case strings.HasPrefix(reason, "terminated by the administrator"):
		return auth.CauseAdminReset
	case strings.Contains(reason, "failed"):
		return auth.CauseNASError
	}
	return auth.CauseNASRequest
}
