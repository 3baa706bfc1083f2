// Package stream produces the deterministic pseudo-random byte streams that the end-to-end tests send through the
// tunnel: the target serves them and the test recomputes their hash without storing them.
package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
)

// Write writes n bytes of the stream named by seed to w.
func Write(w io.Writer, n int64, seed uint64) error {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	r := rand.NewChaCha8(key)
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
