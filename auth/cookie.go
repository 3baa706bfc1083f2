package auth

import (
	"crypto/rand"
	"encoding/base64"
)

// CookieMinter mints session cookies; it is the seam for minting them in another process later.
type CookieMinter interface {
	MintCookie() (string, error)
}

// NewCookie returns a fresh session cookie: 32 bytes from crypto/rand as unpadded base64url (43 characters that
// never include '=' or ';', which break `openconnect -C VALUE`, docs/protocol.md §3.6).
func NewCookie() string {
	var b [32]byte
	rand.Read(b[:]) // never fails on Linux (crypto/rand panics rather than return short)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// RandomMinter is the in-process CookieMinter.
type RandomMinter struct{}

var _ CookieMinter = RandomMinter{}

// MintCookie returns NewCookie().
func (RandomMinter) MintCookie() (string, error) { return NewCookie(), nil }
