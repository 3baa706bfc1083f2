package protocol

// The authentication phase (docs/protocol.md §3): the XML exchange of the client's POSTs (init, then auth-replies
// with the answers) carried to the login module (auth.Authenticator), whose forms are rendered here, until it says
// Success, which creates the Session and hands the client its webvpn cookie. Wrong answers get the module's form
// again with an error, counted per connection and towards a ban; a refusal is a 401.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"ocgate/auth"
	"ocgate/protocol/cluster"
)

const (
	maxAuthFailuresPerConn = 3
	cookieName             = "webvpn"
)

// handleHTTP answers one request of the authentication phase (docs/protocol.md §3).
func (s *Server) handleHTTP(st *connState, req *request) *response {
	path, _, _ := strings.Cut(req.target, "?")
	switch path {
	case "/", "/auth", "/VPN":
	case "/logout":
		return &response{status: 200, reason: "OK"} // AnyConnect compatibility: an empty page
	default:
		s.log.Info("connection closed", "remote", st.remote, "reason", fmt.Sprintf("unknown path %.64q", path))
		return errorResponse(404, "Not Found")
	}
	if req.method != "POST" && req.method != "GET" {
		return errorResponse(405, "Method Not Allowed")
	}
	doc, err := parseClientDoc(req.get("Content-Type"), req.body)
	if err != nil {
		s.log.Info("connection closed", "remote", st.remote, "reason", "bad authentication request: "+err.Error())
		return errorResponse(400, "Bad Request")
	}
	if doc.DeviceID != "" {
		st.deviceID = doc.DeviceID
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.conf().AuthTimeout)
	defer cancel()
	authStart := time.Now()
	areq := auth.Request{LoginID: st.loginID, Remote: st.remote.Addr().String(), ClientCert: st.clientCert,
		Init: req.method == "GET" || doc.Type == "init", Group: doc.GroupSelect, Answers: doc.answers()}
	r := s.auth.Step(ctx, areq)
	st.loginID = r.LoginID
	banner := s.conf().PreLoginBanner
	switch r.Verdict {
	case auth.Continue:
		return xmlResponse(formDoc(banner, r.Form))
	case auth.Failure, auth.Refused:
		st.failures++
		s.stats.authFailures.Add(1)
		s.log.Info("auth failure", "user", r.User, "remote", st.remote, "reason", r.Reason)
		if s.addBanPoints(st.remote.Addr(), s.conf().BanPointsWrongPassword, time.Now()) {
			s.log.Warn("address banned", "remote", st.remote.Addr(), "for", s.cfg.BanTime, "after", "failed logins")
			return errorResponse(401, "Authentication failed")
		}
		if r.Verdict == auth.Refused {
			return errorResponse(401, r.Message)
		}
		if st.failures >= maxAuthFailuresPerConn {
			return errorResponse(401, "Authentication failed")
		}
		// Cisco style: the form again with an error; an interactive user is asked again, a scripted one
		// stops ("Failed to complete authentication").
		return xmlResponse(formDoc(banner, r.Form))
	}

	id := r.Identity
	sess, err := s.newSession(id, st)
	if err != nil {
		s.log.Info("auth failure", "user", id.User, "remote", st.remote, "reason", err.Error())
		// The first form again, showing why; a login that asks for nothing (a certificate) gets a 401.
		areq.LoginID, areq.Init, areq.Answers = "", true, nil
		again := s.auth.Step(ctx, areq)
		st.loginID = again.LoginID
		if again.Verdict != auth.Continue {
			return errorResponse(401, "Authentication failed")
		}
		again.Form.Error = err.Error()
		return xmlResponse(formDoc(banner, again.Form))
	}
	s.stats.authSuccess.Add(1)
	s.stats.login.observe(time.Since(authStart))
	s.authenticated(st.raw) // no longer counts against max_unauth_clients and max_unauth_per_ip
	s.log.Info("auth success", "user", id.User, "remote", st.remote, "id", sess.ID, "groups", id.Groups)
	resp := xmlResponse(successDoc(s.conf().Banner, sess.cookie))
	resp.add("Set-Cookie", cookieName+"="+sess.cookie+"; Secure; HttpOnly")
	return resp
}

// certSum is the digest a session bound to its login's certificate keeps; nil when the login used none.
func certSum(id auth.Identity, cert []byte) *[32]byte {
	if !id.Certificate || cert == nil {
		return nil
	}
	sum := sha256.Sum256(cert)
	return &sum
}

func xmlResponse(body []byte) *response {
	r := &response{status: 200, reason: "OK", body: body}
	r.add("Content-Type", "text/xml")
	r.add("X-Transcend-Version", "1")
	return r
}

// errLimit is a refusal the user is shown as is.
type errLimit string

func (e errLimit) Error() string { return string(e) }

// newSession creates the session for an authenticated user, enforcing max_clients. Only sessions count towards
// max_clients (ocserv's "connected users"): connections still authenticating have their own caps (admission.go),
// so they can never lock logins out. A login over it gets the login form again with the reason, which openconnect
// shows. max_same_clients counts the sessions in use, at CONNECT (admitSameClient), as ocserv does: cookies issued
// and never used do not count. With shared state (shared.go), the addresses are leased here, so that the cookie
// carries them, and the session is recorded in Redis.
func (s *Server) newSession(id auth.Identity, st *connState) (*Session, error) {
	local, err := s.sharedLoginCheck()
	if err != nil {
		return nil, err
	}
	if !s.reserveSession() {
		s.limitedLog("reached maximum client limit; login refused", "active", s.sessions.Len(), "user", id.User, "remote", st.remote)
		return nil, errLimit("The server has reached its maximum number of clients.")
	}
	defer s.unreserveSession()
	sess, err := s.buildSession(id, st)
	if err != nil {
		return nil, err
	}
	if s.sealer != nil {
		sess.sid = auth.NewSessionID()
	}
	if s.cluster != nil {
		err := s.leaseAtLogin(sess, netip.Addr{}, netip.Addr{}, local)
		if errors.Is(err, cluster.ErrUnavailable) && s.conf().RedisUnavailable == "local" {
			local = true // Redis went away just now
			s.warnLocal()
			err = s.leaseAtLogin(sess, netip.Addr{}, netip.Addr{}, local)
		}
		if err != nil {
			return nil, s.loginLeaseError(err)
		}
		sess.mu.Lock()
		sess.remote = st.remote
		sess.mu.Unlock()
		if err := s.sharedCreate(sess, local); err != nil {
			s.releaseAddrs(sess, sess.lease4, sess.lease6, sess.pre4, sess.pre6)
			return nil, s.loginLeaseError(err)
		}
	}
	cookie, err := s.mintCookie(sess)
	if err != nil {
		if s.cluster != nil {
			s.releaseAddrs(sess, sess.lease4, sess.lease6, sess.pre4, sess.pre6)
		}
		return nil, fmt.Errorf("minting a cookie: %w", err)
	}
	sess.cookie = cookie
	s.armSession(sess, st)
	s.newSessMu.Lock()
	s.sessions.Add(sess) // before the deferred release of the reserved place
	s.newSessMu.Unlock()
	return sess, nil
}

// reserveSession reserves a place under max_clients (pendingSess) while a session is made: with shared state that
// takes round trips to Redis and the security module, which logins must not wait for one after another. false:
// the server is full. unreserveSession gives the place back once the session is in the store (or not made).
func (s *Server) reserveSession() bool {
	s.newSessMu.Lock()
	defer s.newSessMu.Unlock()
	if n := s.conf().MaxClients; n > 0 && s.sessions.Len()+s.pendingSess >= n {
		return false
	}
	s.pendingSess++
	return true
}

func (s *Server) unreserveSession() {
	s.newSessMu.Lock()
	s.pendingSess--
	s.newSessMu.Unlock()
}

// loginLeaseError is what a user is shown when the shared state refused a login's addresses.
func (s *Server) loginLeaseError(err error) error {
	if errors.Is(err, cluster.ErrUnavailable) {
		return errDegraded
	}
	var lim errLimit
	if errors.As(err, &lim) {
		return err
	}
	return errLimit("No address is available for you: " + err.Error())
}

// buildSession makes the session of an identity with its configuration (global, group and user files, and what
// the authentication server granted); it is not stored yet.
func (s *Server) buildSession(id auth.Identity, st *connState) (*Session, error) {
	uc, err := s.conf().UserConfig(id.User, id.Groups)
	if err != nil {
		// An administrator's mistake in a per-user file: refuse (ocserv does too) and say where.
		s.log.Error("per-user configuration", "user", id.User, "err", err)
		return nil, errLimit("The server could not load your configuration; contact the administrator.")
	}
	applyGrants(uc, id.Grants)
	for _, w := range uc.Warnings {
		s.log.Warn(w, "user", id.User)
	}
	sess := &Session{
		ID:        s.nextID.Add(1),
		User:      id.User,
		Groups:    id.Groups,
		UserAgent: st.userAgent,
		DeviceID:  st.deviceID,
		Created:   time.Now(),
		env:       s.sessEnv,
		authAddr:  st.remote.Addr(),
		rxLimit:   newTokenBucket(uc.RxDataPerSec),
		txLimit:   newTokenBucket(uc.TxDataPerSec),
		grants:    id.Grants,
		certSum:   certSum(id, st.clientCert),
		ucfg:      uc,
		pcfg: sessionPolicy{
			routes: uc.Routes, noRoutes: uc.NoRoutes, iroutes: uc.IRoutes, dns: uc.DNS,
			restrict: uc.RestrictToRoutes,
		},
	}
	if len(sess.pcfg.dns) == 0 {
		sess.pcfg.dns = s.dns
		// The netstack's resolver answers at every pool's gateway: a session of its own pool gets that one's.
		if n := uc.IPv4Network; n.IsValid() && n != s.pool.Prefix() && slices.Contains(s.dns, s.pool.Gateway()) {
			sess.pcfg.dns = slices.Clone(s.dns)
			sess.pcfg.dns[slices.Index(s.dns, s.pool.Gateway())] = n.Masked().Addr().Next()
		}
	}
	return sess, nil
}

// armSession starts a new session's timers: a cookie never used for a CONNECT expires like one whose tunnel went
// away; session_timeout.
func (s *Server) armSession(sess *Session, st *connState) {
	sess.mu.Lock()
	sess.remote = st.remote
	sess.startExpiryLocked(s.conf().CookieTimeout)
	if d := sess.ucfg.SessionTimeout; d > 0 {
		sess.sessionTimer = time.AfterFunc(d, func() { s.endSession(sess, "session timeout") })
	}
	sess.mu.Unlock()
}
