package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

// SHA-crypt, the $5$ (SHA-256) and $6$ (SHA-512) formats of crypt(3), as specified in Ulrich Drepper's "Unix crypt
// using SHA-256 and SHA-512" (https://www.akkadia.org/drepper/SHA-crypt.txt); step numbers below are the
// specification's.
//
// We have our own because verifying ocpasswd's $5$ hashes was a third of the server's CPU during session setup, and
// with go-crypt most of that was not hashing: it allocates a fresh digest in each of the 5000 rounds. Here a verify
// reuses one hash.Hash and fixed buffers, pooled between verifies, so it allocates nothing.

const (
	shaCryptRoundsDefault = 5000 // when the setting has no rounds=N$
	shaCryptRoundsMin     = 1000
	shaCryptRoundsMax     = 999_999_999
	shaCryptSaltMax       = 16 // longer salts are truncated
	shaCryptRoundsPrefix  = "rounds="
)

// shaCryptAlphabet is crypt(3)'s base64 alphabet, which is not RFC 4648's.
const shaCryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// shaCryptAlg is one of the two variants, with the working memory of its computations.
type shaCryptAlg struct {
	id      string // between the first two '$'
	size    int    // digest length in bytes
	newHash func() hash.Hash
	// order lists the digest bytes in the order the final encoding consumes them (step 22 e), three per
	// 4-character group, each group's first byte the most significant; the last group may be shorter.
	order []byte
	pool  sync.Pool // *shaCryptState
}

var (
	shaCrypt256 = &shaCryptAlg{id: "5", size: sha256.Size, newHash: sha256.New, order: []byte{
		0, 10, 20, 21, 1, 11, 12, 22, 2, 3, 13, 23, 24, 4, 14, 15, 25, 5, 6, 16, 26, 27, 7, 17, 18, 28, 8, 9, 19, 29,
		31, 30,
	}}
	shaCrypt512 = &shaCryptAlg{id: "6", size: sha512.Size, newHash: sha512.New, order: []byte{
		0, 21, 42, 22, 43, 1, 44, 2, 23, 3, 24, 45, 25, 46, 4, 47, 5, 26, 6, 27, 48, 28, 49, 7, 50, 8, 29, 9, 30, 51,
		31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13, 56, 14, 35, 15, 36, 57, 37, 58, 16, 59, 17, 38, 18, 39, 60,
		40, 61, 19, 62, 20, 41,
		63,
	}}
)

// encodedLen is the length of the encoded digest: 4 characters per 3 bytes, n+1 for a last group of n < 3.
func (alg *shaCryptAlg) encodedLen() int {
	n := alg.size / 3 * 4
	if r := alg.size % 3; r != 0 {
		n += r + 1
	}
	return n
}

// shaCryptState is the working memory of one computation. Buffers handed to a hash.Hash escape to the heap, so
// rather than allocating them (and the hash) per verify we keep them in the algorithm's pool.
type shaCryptState struct {
	h    hash.Hash
	pw   [MaxPasswordLen]byte  // the password, for hash.Write
	p    [MaxPasswordLen]byte  // P sequence (step 16)
	salt [shaCryptSaltMax]byte // the salt, for hash.Write
	s    [shaCryptSaltMax]byte // S sequence (step 20)
	a    [sha512.Size]byte     // digest A, then C of each round
	b    [sha512.Size]byte     // digests B, DP and DS
}

func (alg *shaCryptAlg) getState() *shaCryptState {
	if st, ok := alg.pool.Get().(*shaCryptState); ok {
		return st
	}
	return &shaCryptState{h: alg.newHash()}
}

// putState clears what derives from the password before pooling the state: P is a single unsalted hash of it.
func (alg *shaCryptAlg) putState(st *shaCryptState) {
	clear(st.pw[:])
	clear(st.p[:])
	alg.pool.Put(st)
}

// key computes the digest of password with salt and rounds (already within limits) into dst: the last C of step
// 21, before the byte permutation of the encoding. len(password) must be at most MaxPasswordLen, which bounds the
// work of steps 13-14 (quadratic in the length).
func (alg *shaCryptAlg) key(dst []byte, password, salt string, rounds int) {
	st := alg.getState()
	defer alg.putState(st)
	h, n := st.h, alg.size
	pw := st.pw[:copy(st.pw[:], password)]
	sl := st.salt[:copy(st.salt[:], salt)]

	// Steps 4-8: digest B of password, salt, password. It goes first so that one hash.Hash serves all digests.
	h.Reset()
	h.Write(pw)
	h.Write(sl)
	h.Write(pw)
	b := h.Sum(st.b[:0])

	// Steps 1-3 and 9-12: digest A.
	h.Reset()
	h.Write(pw)
	h.Write(sl)
	for rest := len(pw); rest > 0; rest -= n {
		h.Write(b[:min(rest, n)]) // B once per whole digest length of the password, then its first bytes
	}
	for l := len(pw); l > 0; l >>= 1 {
		if l&1 != 0 {
			h.Write(b)
		} else {
			h.Write(pw)
		}
	}
	a := h.Sum(st.a[:0])

	// Steps 13-16: digest DP of the password repeated once per byte; P is DP repeated to the password's length.
	h.Reset()
	for range len(pw) {
		h.Write(pw)
	}
	dp := h.Sum(st.b[:0])
	p := st.p[:len(pw)]
	for i := 0; i < len(p); i += n {
		copy(p[i:], dp)
	}

	// Steps 17-20: digest DS of the salt repeated 16+A[0] times; S is its first len(salt) bytes (salt < digest).
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(sl)
	}
	ds := h.Sum(st.b[:0])
	s := st.s[:copy(st.s[:len(sl)], ds)]

	// Step 21: the rounds, each a digest of the previous one mixed with P and S. Sum appends to a[:0] after
	// computing the digest, so C may be overwritten in place.
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(a)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(a)
		} else {
			h.Write(p)
		}
		a = h.Sum(a[:0])
	}
	copy(dst, a)
}

// encodeKey appends the step-22 encoding of key: bytes permuted, taken three at a time as a 24-bit number whose
// six-bit groups are written least significant first.
func (alg *shaCryptAlg) encodeKey(dst, key []byte) []byte {
	for i := 0; i < len(alg.order); i += 3 {
		g := alg.order[i:min(i+3, len(alg.order))]
		var w uint32
		for _, j := range g {
			w = w<<8 | uint32(key[j])
		}
		for range len(g) + 1 {
			dst = append(dst, shaCryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	return dst
}

// decodeKey reverses encodeKey into key. It refuses characters outside the alphabet, the wrong length and bits
// set beyond the last byte, so that only the encoding crypt(3) writes is accepted.
func (alg *shaCryptAlg) decodeKey(key []byte, enc string) bool {
	if len(enc) != alg.encodedLen() {
		return false
	}
	for i := 0; i < len(alg.order); i += 3 {
		g := alg.order[i:min(i+3, len(alg.order))]
		var w uint32
		for k := len(g); k >= 0; k-- {
			v := strings.IndexByte(shaCryptAlphabet, enc[0])
			if v < 0 {
				return false
			}
			w |= uint32(v) << (6 * (len(g) - k))
			enc = enc[1:]
		}
		if w>>(8*len(g)) != 0 {
			return false
		}
		for k := len(g) - 1; k >= 0; k-- {
			key[g[k]] = byte(w)
			w >>= 8
		}
	}
	return true
}

// shaCryptHash is a parsed $5$ or $6$ hash, ready to verify passwords against.
type shaCryptHash struct {
	alg      *shaCryptAlg
	rounds   int
	explicit bool   // the setting had rounds=N$: crypt(3) then writes it back, even for the default 5000
	salt     string // at most shaCryptSaltMax bytes
	key      [sha512.Size]byte
}

// parseSHACryptSetting parses the "$5$[rounds=N$]salt" prefix of a hash as crypt(3) does: N is clamped to
// 1000..999999999 and the salt (up to the next '$') is truncated to 16 bytes. A "rounds=" not followed by digits
// and a '$' is part of the salt. rest is what follows the salt field.
func parseSHACryptSetting(setting string) (h shaCryptHash, rest string, ok bool) {
	switch {
	case strings.HasPrefix(setting, "$5$"):
		h.alg = shaCrypt256
	case strings.HasPrefix(setting, "$6$"):
		h.alg = shaCrypt512
	default:
		return shaCryptHash{}, "", false
	}
	s := setting[3:]
	h.rounds = shaCryptRoundsDefault
	if num, found := strings.CutPrefix(s, shaCryptRoundsPrefix); found {
		digits := 0
		for digits < len(num) && '0' <= num[digits] && num[digits] <= '9' {
			digits++
		}
		if digits > 0 && digits < len(num) && num[digits] == '$' {
			r := 0
			for _, c := range num[:digits] {
				r = min(r*10+int(c-'0'), shaCryptRoundsMax+1) // saturates rather than overflows
			}
			h.rounds, h.explicit = min(max(r, shaCryptRoundsMin), shaCryptRoundsMax), true
			s = num[digits+1:]
		}
	}
	end := strings.IndexByte(s, '$')
	if end < 0 {
		end = len(s)
	}
	h.salt, rest = s[:min(end, shaCryptSaltMax)], s[end:]
	return h, rest, true
}

// parseSHACryptHash parses a complete $5$ or $6$ hash. It succeeds only for a hash in the exact form crypt(3)
// writes, i.e. one that encodes back to itself: rounds within limits and without leading zeros, a salt of at most
// 16 bytes, the canonical encoding of a key.
func parseSHACryptHash(s string) (*shaCryptHash, bool) {
	h, rest, ok := parseSHACryptSetting(s)
	if !ok || !strings.HasPrefix(rest, "$") || !h.alg.decodeKey(h.key[:], rest[1:]) || h.String() != s {
		return nil, false
	}
	return &h, true
}

// String returns the hash in crypt(3)'s format.
func (h *shaCryptHash) String() string {
	b := make([]byte, 0, 3+len(shaCryptRoundsPrefix)+10+len(h.salt)+1+h.alg.encodedLen())
	b = append(b, '$')
	b = append(b, h.alg.id...)
	b = append(b, '$')
	if h.explicit {
		b = append(b, shaCryptRoundsPrefix...)
		b = strconv.AppendInt(b, int64(h.rounds), 10)
		b = append(b, '$')
	}
	b = append(b, h.salt...)
	b = append(b, '$')
	return string(h.alg.encodeKey(b, h.key[:]))
}

// Match reports whether password hashes to h. Passwords longer than MaxPasswordLen never match.
func (h *shaCryptHash) Match(password string) bool {
	if len(password) > MaxPasswordLen {
		return false
	}
	var got [sha512.Size]byte
	h.alg.key(got[:], password, h.salt, h.rounds)
	return subtle.ConstantTimeCompare(got[:h.alg.size], h.key[:h.alg.size]) == 1
}

// shaCryptString is crypt(3) for $5$ and $6$ settings: it hashes password with the algorithm, rounds and salt of
// setting (a setting alone, "$5$salt", or a complete hash) and returns the complete hash.
func shaCryptString(password, setting string) (string, error) {
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	}
	h, _, ok := parseSHACryptSetting(setting)
	if !ok {
		return "", errors.New("not a $5$ or $6$ setting")
	}
	h.alg.key(h.key[:], password, h.salt, h.rounds)
	return h.String(), nil
}
