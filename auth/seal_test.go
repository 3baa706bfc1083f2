package auth

import (
	"crypto/rand"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func newKeyLine() string {
	b := make([]byte, CookieKeySize)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func mustKeys(t *testing.T, lines ...string) *CookieKeys {
	t.Helper()
	k, err := ParseCookieKeys([]byte(strings.Join(lines, "\n")+"\n"), "keys")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := mustKeys(t, newKeyLine())
	now := time.Now()
	in := Token{SessionID: NewSessionID(), User: "alice", Groups: []string{"staff", "ops"},
		IPv4: netip.MustParseAddr("10.1.2.3"), IPv6: netip.MustParseAddr("fd00::5"), NotAfter: now.Add(time.Hour).Truncate(time.Second),
		AuthAddr: netip.MustParseAddr("192.0.2.7"), CertSum: &[32]byte{1, 2, 3}}
	c, err := k.Seal(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(c, "=;+/ ") {
		t.Fatalf("cookie %q holds a character openconnect -C cannot take", c)
	}
	out, err := k.Open(c, now)
	if err != nil {
		t.Fatal(err)
	}
	if out.SessionID != in.SessionID || out.User != in.User || strings.Join(out.Groups, ",") != "staff,ops" ||
		out.IPv4 != in.IPv4 || out.IPv6 != in.IPv6 || !out.NotAfter.Equal(in.NotAfter) || out.AuthAddr != in.AuthAddr ||
		out.CertSum == nil || *out.CertSum != *in.CertSum {
		t.Fatalf("opened %+v, sealed %+v", out, in)
	}
	bare, _ := k.Seal(Token{User: "bob"})
	if tb, err := k.Open(bare, now); err != nil || tb.IPv4.IsValid() || tb.IPv6.IsValid() || !tb.NotAfter.IsZero() || tb.Groups != nil ||
		tb.AuthAddr.IsValid() || tb.CertSum != nil {
		t.Fatalf("a token without addresses or bound opened as %+v, %v", tb, err)
	}
}

func TestSealRefuses(t *testing.T) {
	k := mustKeys(t, newKeyLine())
	now := time.Now()
	c, _ := k.Seal(Token{SessionID: NewSessionID(), User: "alice", NotAfter: now.Add(time.Minute)})
	raw, _ := base64.RawURLEncoding.DecodeString(c)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for name, cookie := range map[string]string{
		"tampered body":    flip(len(raw) - 20),
		"tampered header":  flip(0),
		"other key id":     flip(2),
		"tampered nonce":   flip(7),
		"truncated":        c[:len(c)-5],
		"empty":            "",
		"not base64":       "a;b=c",
		"random cookie":    NewCookie(),
		"other key's seal": func() string { s, _ := mustKeys(t, newKeyLine()).Seal(Token{User: "alice"}); return s }(),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := k.Open(cookie, now); err == nil {
				t.Fatal("opened")
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		if _, err := k.Open(c, now.Add(2*time.Minute)); err == nil {
			t.Fatal("an expired token opened")
		}
	})
}

// TestSealRotation: a cookie sealed with the old first key opens once a new key is prepended; new cookies are
// sealed with the new key; a cookie of a key removed from the file no longer opens.
func TestSealRotation(t *testing.T) {
	oldKey, newKey := newKeyLine(), newKeyLine()
	before := mustKeys(t, oldKey)
	c, _ := before.Seal(Token{User: "alice"})
	after := mustKeys(t, "# rotated", newKey, "", oldKey)
	if tok, err := after.Open(c, time.Now()); err != nil || tok.User != "alice" {
		t.Fatalf("after rotation: %+v, %v", tok, err)
	}
	c2, _ := after.Seal(Token{User: "bob"})
	if _, err := before.Open(c2, time.Now()); err == nil {
		t.Fatal("a new cookie opened with the old key alone: it was not sealed with the first key")
	}
	if _, err := mustKeys(t, newKey).Open(c, time.Now()); err == nil {
		t.Fatal("a cookie of a removed key opened")
	}
}

func TestParseCookieKeysErrors(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct{ name, data, want string }{
		{"bad base64", newKeyLine() + "\n!!notbase64!!\n", "keys:2: not base64"},
		{"wrong length", "\n" + short + "\n", "keys:2: a cookie key is 32 bytes, this one 16"},
		{"empty", "# nothing\n", "no cookie key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCookieKeys([]byte(tc.data), "keys")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
