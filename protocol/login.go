package protocol

// The authentication phase (docs/protocol.md §3): the XML exchange of the client's POSTs (init, then auth-reply
// with the credentials) until the password is accepted, which creates the Session and hands the client its
// webvpn cookie. Wrong passwords are answered with the form again, counted per connection and towards a ban.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"ocgate/auth"
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
	if doc.GroupSelect != "" {
		st.group = doc.GroupSelect
	}
	if req.method == "GET" || doc.Type == "init" {
		return xmlResponse(loginForm(s.conf().PreLoginBanner, ""))
	}
	// An empty password is checked like any other: ocserv lets a user whose hash is empty in with it.
	user, password := doc.Auth.Username, doc.Auth.Password
	if user == "" {
		return xmlResponse(loginForm(s.conf().PreLoginBanner, "Please enter your username and password."))
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AuthTimeout)
	authStart := time.Now()
	id, err := s.checker.CheckPassword(ctx, user, password)
	cancel()
	if err != nil {
		st.failures++
		s.stats.authFailures.Add(1)
		reason := "wrong password or unknown user"
		switch {
		case errors.Is(err, auth.ErrLocked):
			reason = "account locked"
		case !errors.Is(err, auth.ErrBadCredentials):
			reason = "error: " + err.Error()
		}
		s.log.Info("auth failure", "user", user, "remote", st.remote, "reason", reason)
		if s.bans.Add(st.remote.Addr(), s.cfg.BanPointsWrongPassword, time.Now()) {
			s.log.Warn("address banned", "remote", st.remote.Addr(), "for", s.cfg.BanTime, "after", "failed logins")
			return errorResponse(401, "Authentication failed")
		}
		if st.failures >= maxAuthFailuresPerConn {
			return errorResponse(401, "Authentication failed")
		}
		// Cisco style: the same form again with an error; an interactive user is asked again, a scripted one
		// stops ("Failed to complete authentication").
		return xmlResponse(loginForm(s.conf().PreLoginBanner, "Login failed."))
	}

	if st.group != "" {
		// A group the user is not in is refused, as ocserv does; the one selected becomes the session's group.
		i := slices.Index(id.Groups, st.group)
		if i < 0 {
			s.log.Info("auth failure", "user", user, "remote", st.remote,
				"reason", fmt.Sprintf("selected group %.64q is not one of the user's", st.group))
			return errorResponse(401, "Authentication failed")
		}
		id.Groups = append([]string{st.group}, slices.Delete(slices.Clone(id.Groups), i, i+1)...)
	}

	sess, err := s.newSession(id, st)
	if err != nil {
		s.log.Info("auth failure", "user", user, "remote", st.remote, "reason", err.Error())
		return xmlResponse(loginForm(s.conf().PreLoginBanner, err.Error()))
	}
	s.stats.authSuccess.Add(1)
	s.stats.login.observe(time.Since(authStart))
	s.log.Info("auth success", "user", user, "remote", st.remote, "id", sess.ID)
	resp := xmlResponse(successDoc(s.conf().Banner, sess.cookie))
	resp.add("Set-Cookie", cookieName+"="+sess.cookie+"; Secure; HttpOnly")
	return resp
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

// newSession creates the session for an authenticated user, enforcing max_clients. max_same_clients counts the
// sessions in use, at CONNECT (admitSameClient), as ocserv does: cookies issued and never used do not count.
func (s *Server) newSession(id auth.Identity, st *connState) (*Session, error) {
	if n := s.cfg.MaxClients; n > 0 && s.sessions.Len() >= n {
		return nil, errLimit("The server has reached its maximum number of clients.")
	}
	uc, err := s.conf().UserConfig(id.User, id.Groups)
	if err != nil {
		// An administrator's mistake in a per-user file: refuse (ocserv does too) and say where.
		s.log.Error("per-user configuration", "user", id.User, "err", err)
		return nil, errLimit("The server could not load your configuration; contact the administrator.")
	}
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
		ucfg:      uc,
		pcfg: sessionPolicy{
			routes: uc.Routes, noRoutes: uc.NoRoutes, iroutes: uc.IRoutes, dns: uc.DNS,
			restrict: uc.RestrictToRoutes,
		},
	}
	if len(sess.pcfg.dns) == 0 {
		sess.pcfg.dns = s.dns
	}
	cookie, err := s.minter.MintCookie()
	if err != nil {
		return nil, fmt.Errorf("minting a cookie: %w", err)
	}
	sess.cookie = cookie
	sess.mu.Lock()
	sess.remote = st.remote
	// A cookie never used for a CONNECT expires like one whose tunnel went away.
	sess.startExpiryLocked(s.cfg.CookieTimeout)
	if d := uc.SessionTimeout; d > 0 {
		sess.sessionTimer = time.AfterFunc(d, func() { s.endSession(sess, "session timeout") })
	}
	sess.mu.Unlock()
	s.sessions.Add(sess)
	return sess, nil
}
