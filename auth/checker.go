// Package auth holds the authenticators (ocpasswd-format password files so far), cookie minting, ban points and
// related checks. It is pure logic behind small interfaces and never talks to clients.
package auth

import (
	"context"
	"errors"
)

// Identity is an authenticated user.
type Identity struct {
	User   string
	Groups []string
	Grants Grants // what the authentication server assigned (RADIUS); zero for the other methods
	// Certificate: a certificate method read the user out of the client's certificate. The session is bound to
	// that certificate: every CONNECT with its cookie must present it again (as ocserv does).
	Certificate bool
}

var (
	// ErrBadCredentials is returned for an unknown user or a wrong password (the two are not told apart).
	ErrBadCredentials = errors.New("wrong user name or password")
	// ErrLocked is returned for a locked account (hash prefixed with '!'), and only when the password was right.
	ErrLocked = errors.New("account locked")
)

// PasswordChecker verifies a user's password. It is the seam that privilege separation will later put behind a
// local socket, so it takes and returns plain values only.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, user, password string) (Identity, error)
}
