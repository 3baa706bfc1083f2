package auth

// Sealed cookies: with cookie_key_file, a session's cookie is a token that any instance holding the keys opens
// without asking anyone, so a client roams to another instance with it (docs/architecture.md, "Several
// instances"). The token is XChaCha20-Poly1305 over the session's facts:
//
//	cookie = base64url-unpadded( version(1) ‖ key id(4) ‖ nonce(24) ‖ sealed(facts) )
//	facts  = session id(16) ‖ not after(8, Unix seconds; 0 = none) ‖ IPv4(4; 0 = none) ‖ IPv6(16; 0 = none)
//	         ‖ login address(16, IPv4-mapped; 0 = none) ‖ certificate SHA-256(32; 0 = none)
//	         ‖ user ‖ groups…  (each a uvarint length and the bytes)
//
// The key id (the first 4 bytes of SHA-256 of the key) picks the key that opens the token, so every key of the file
// opens the tokens it sealed and only the first seals: rotation is prepending a line. Base64url without padding
// never holds '=' or ';', which break `openconnect -C VALUE` (docs/protocol.md §3.6). The header (version and key
// id) is the AEAD's additional data, so it cannot be changed either.
//
// A token proves the login happened; whether its session still lives (logout, terminate, cookie_timeout) is the
// shared state's to say (protocol/cluster).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// CookieKeySize is the length of a cookie key.
const CookieKeySize = chacha20poly1305.KeySize

const (
	tokenVersion = 1
	tokenHeader  = 1 + 4 // version, key id
	maxTokenLen  = 4096  // a cookie longer than this is refused before decoding
	factsFixed   = 16 + 8 + 4 + 16 + 16 + 32
)

// Token is what a sealed cookie carries.
type Token struct {
	SessionID [16]byte   // random, the session's name in the shared state
	User      string     // the authenticated user
	Groups    []string   // the user's groups, the chosen one first
	IPv4      netip.Addr // the session's addresses (invalid: none yet)
	IPv6      netip.Addr
	NotAfter  time.Time // the latest the cookie opens (session_timeout); zero = no such bound
	// AuthAddr is the client address that logged in (deny_roaming); CertSum the SHA-256 of the certificate the
	// login read the user from, which every connection using the cookie must present (nil: none).
	AuthAddr netip.Addr
	CertSum  *[32]byte
}

// SessionIDString is the session id in hex, as the shared state names it.
func (t *Token) SessionIDString() string { return fmt.Sprintf("%x", t.SessionID[:]) }

// NewSessionID returns a random session id.
func NewSessionID() [16]byte {
	var id [16]byte
	rand.Read(id[:])
	return id
}

// ErrBadCookie is returned for a cookie that is not a token sealed by one of the keys, or has expired.
var ErrBadCookie = errors.New("cookie is not acceptable")

// CookieKeys seals and opens cookies with the keys of cookie_key_file.
type CookieKeys struct {
	ids   [][4]byte
	aeads []cipher.AEAD
}

// LoadCookieKeys reads cookie_key_file.
func LoadCookieKeys(path string) (*CookieKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cookie_key_file: %w", err)
	}
	return ParseCookieKeys(data, path)
}

// ParseCookieKeys parses keys, one per line in standard base64 (blank lines and lines starting with '#' are
// skipped); name is the file in errors, which say the line.
func ParseCookieKeys(data []byte, name string) (*CookieKeys, error) {
	k := &CookieKeys{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			if raw, err = base64.RawStdEncoding.DecodeString(line); err != nil {
				return nil, fmt.Errorf("%s:%d: not base64: %v", name, n, err)
			}
		}
		if len(raw) != CookieKeySize {
			return nil, fmt.Errorf("%s:%d: a cookie key is %d bytes, this one %d (make one with "+
				"`head -c32 /dev/urandom | base64`)", name, n, CookieKeySize, len(raw))
		}
		aead, _ := chacha20poly1305.NewX(raw) // the size is right
		sum := sha256.Sum256(raw)
		k.ids = append(k.ids, [4]byte(sum[:4]))
		k.aeads = append(k.aeads, aead)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(k.aeads) == 0 {
		return nil, fmt.Errorf("%s: no cookie key (want one base64 key of %d bytes per line)", name, CookieKeySize)
	}
	return k, nil
}

// Seal returns the cookie of t, sealed with the first key.
func (k *CookieKeys) Seal(t Token) (string, error) {
	facts := make([]byte, factsFixed, factsFixed+16+len(t.User))
	copy(facts, t.SessionID[:])
	if !t.NotAfter.IsZero() {
		binary.BigEndian.PutUint64(facts[16:], uint64(t.NotAfter.Unix()))
	}
	if t.IPv4.Is4() {
		a := t.IPv4.As4()
		copy(facts[24:], a[:])
	}
	if t.IPv6.Is6() {
		a := t.IPv6.As16()
		copy(facts[28:], a[:])
	}
	if t.AuthAddr.IsValid() {
		a := t.AuthAddr.As16()
		copy(facts[44:], a[:])
	}
	if t.CertSum != nil {
		copy(facts[60:], t.CertSum[:])
	}
	facts = appendString(facts, t.User)
	for _, g := range t.Groups {
		facts = appendString(facts, g)
	}
	aead := k.aeads[0]
	out := make([]byte, tokenHeader+aead.NonceSize(), tokenHeader+aead.NonceSize()+len(facts)+aead.Overhead())
	out[0] = tokenVersion
	copy(out[1:], k.ids[0][:])
	rand.Read(out[tokenHeader:])
	out = aead.Seal(out, out[tokenHeader:], facts, out[:tokenHeader])
	s := base64.RawURLEncoding.EncodeToString(out)
	if len(s) > maxTokenLen {
		return "", fmt.Errorf("sealing a cookie: %d bytes (user and group names too long)", len(s))
	}
	return s, nil
}

// Open returns the token of cookie, if one of the keys sealed it and it has not passed its NotAfter at now.
func (k *CookieKeys) Open(cookie string, now time.Time) (Token, error) {
	if len(cookie) > maxTokenLen {
		return Token{}, ErrBadCookie
	}
	raw, err := base64.RawURLEncoding.DecodeString(cookie)
	ns := chacha20poly1305.NonceSizeX
	if err != nil || len(raw) < tokenHeader+ns+chacha20poly1305.Overhead || raw[0] != tokenVersion {
		return Token{}, ErrBadCookie
	}
	var facts []byte
	for i, id := range k.ids {
		if [4]byte(raw[1:5]) == id {
			facts, err = k.aeads[i].Open(nil, raw[tokenHeader:tokenHeader+ns], raw[tokenHeader+ns:], raw[:tokenHeader])
			break
		}
	}
	if facts == nil || err != nil || len(facts) < factsFixed {
		return Token{}, ErrBadCookie
	}
	var t Token
	copy(t.SessionID[:], facts)
	if s := binary.BigEndian.Uint64(facts[16:]); s != 0 {
		t.NotAfter = time.Unix(int64(s), 0)
		if now.After(t.NotAfter) {
			return Token{}, ErrBadCookie
		}
	}
	if a := netip.AddrFrom4([4]byte(facts[24:28])); a != netip.IPv4Unspecified() {
		t.IPv4 = a
	}
	if a := netip.AddrFrom16([16]byte(facts[28:44])); a != netip.IPv6Unspecified() {
		t.IPv6 = a
	}
	if a := netip.AddrFrom16([16]byte(facts[44:60])); a != netip.IPv6Unspecified() {
		t.AuthAddr = a.Unmap()
	}
	if sum := [32]byte(facts[60:92]); sum != [32]byte{} {
		t.CertSum = &sum
	}
	rest := facts[factsFixed:]
	first := true
	for len(rest) > 0 {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return Token{}, ErrBadCookie
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		if first {
			t.User, first = s, false
		} else {
			t.Groups = append(t.Groups, s)
		}
	}
	return t, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// CookieSealer seals and opens cookies, in the security module (which alone reads cookie_key_file) or in-process
// (*CookieKeys through LocalSealer).
type CookieSealer interface {
	SealCookie(ctx context.Context, t Token) (string, error)
	OpenCookie(ctx context.Context, cookie string) (Token, error)
}

// LocalSealer is the in-process CookieSealer over keys.
type LocalSealer struct{ Keys *CookieKeys }

var _ CookieSealer = LocalSealer{}

// SealCookie seals t with the first key.
func (l LocalSealer) SealCookie(_ context.Context, t Token) (string, error) { return l.Keys.Seal(t) }

// OpenCookie opens cookie at the current time.
func (l LocalSealer) OpenCookie(_ context.Context, cookie string) (Token, error) {
	return l.Keys.Open(cookie, time.Now())
}
