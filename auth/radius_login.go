package auth

// The RADIUS steps of a login (the state machine is in login.go).

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"layeh.com/radius"
)

// radiusAsk sends user's password (or the answer to a challenge) and moves the login on by the server's answer.
func (m *Module) radiusAsk(ctx context.Context, l *login, req Request, user, password string) Reply {
	state := l.radiusState
	if l.step != stepRadiusChallenge {
		state = nil
	}
	a, err := l.chain.Radius.ask(ctx, user, password, state, req.Remote, l.acctID)
	switch {
	case err != nil:
		l.step, l.radiusState = stepPassword, nil
		r := failure(m.passwordForm(l, "Login failed."), err, "")
		r.User = user
		return r
	case a.code == radius.CodeAccessChallenge:
		l.step, l.radiusState, l.radiusUser, l.radiusMessage = stepRadiusChallenge, a.state, user, a.message
		return Reply{Verdict: Continue, User: user, Form: challengeForm(a.message, "")}
	case a.code != radius.CodeAccessAccept:
		l.step, l.radiusState = stepPassword, nil
		r := failure(m.passwordForm(l, "Login failed."), ErrBadCredentials, "rejected by the RADIUS server")
		r.User = user
		return r
	}
	l.step, l.radiusState = stepPassword, nil
	l.user, l.groups, l.grants = a.identity.User, a.identity.Groups, a.identity.Grants
	if l.certGroups != nil {
		l.groups = l.certGroups
	}
	return m.finish(l)
}

// challengeForm asks for the answer to an Access-Challenge, showing the server's Reply-Message.
func challengeForm(message, errMsg string) *Form {
	if message == "" {
		message = "Please enter your response."
	}
	return &Form{
		ID:      "challenge",
		Message: message,
		Error:   errMsg,
		Inputs:  []Input{{Type: "password", Name: "secondary_password", Label: "Response:"}},
	}
}

// newAcctSessionID returns a fresh Acct-Session-Id: 16 hex digits.
func newAcctSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
