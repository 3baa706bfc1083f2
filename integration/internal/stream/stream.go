// Package stream produces the deterministic pseudo-random byte streams that the end-to-end tests send through the
// tunnel: the target serves them and the test recomputes their hash without storing them. Write's streams are
// random bytes, which no compressor shrinks; WriteText's are words, which compress about twofold.
package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"strings"
)

func source(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(key)
}

// Write writes n bytes of the stream named by seed to w.
func Write(w io.Writer, n int64, seed uint64) error {
	r := source(seed)
	buf := make([]byte, 64<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		r.Read(chunk)
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

// SHA256 returns the hex SHA-256 of n bytes of the stream named by seed.
func SHA256(n int64, seed uint64) string {
	h := sha256.New()
	Write(h, n, seed)
	return hex.EncodeToString(h.Sum(nil))
}

// words are WriteText's vocabulary.
var words = strings.Fields(`the of and to in is was for on that with as by at from his her an which or be are
	this had not but it have were they their one all we can has there been if more when will would who so no
	tunnel packet frame session client server cookie address route stream window offset length literal copy`)

// WriteText writes n bytes of the text stream named by seed to w: words of a small vocabulary picked at random,
// eight to a line.
func WriteText(w io.Writer, n int64, seed uint64) error {
	r := rand.New(source(seed))
	buf := make([]byte, 0, 64<<10+64)
	for k := 0; n > 0; k++ {
		buf = append(buf, words[r.IntN(len(words))]...)
		if k%8 == 7 {
			buf = append(buf, '\n')
		} else {
			buf = append(buf, ' ')
		}
		if len(buf) >= 64<<10 || int64(len(buf)) >= n {
			chunk := buf[:min(int64(len(buf)), n)]
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			n -= int64(len(chunk))
			buf = buf[:0]
		}
	}
	return nil
}

// TextSHA256 returns the hex SHA-256 of n bytes of the text stream named by seed.
func TextSHA256(n int64, seed uint64) string {
	h := sha256.New()
	WriteText(h, n, seed)
	return hex.EncodeToString(h.Sum(nil))
}
