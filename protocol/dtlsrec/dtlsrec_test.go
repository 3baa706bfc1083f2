package dtlsrec

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"
)

func TestReplayWindow(t *testing.T) {
	l := &Layer{}
	for _, seq := range []uint64{10, 12, 11, 5, 80} {
		if !l.replayOK(seq) {
			t.Fatalf("fresh %d refused", seq)
		}
		l.markSeen(seq)
	}
	for _, seq := range []uint64{10, 12, 80, 16} {
		if l.replayOK(seq) && seq != 16 {
			t.Fatalf("replayed %d accepted", seq)
		}
	}
	if !l.replayOK(17) || l.replayOK(80-64) {
		t.Fatal("window edges wrong")
	}
}

// TestSealOpen: a sealed record opens (once), a tampered or replayed one does not, and sealing allocates
// nothing.
func TestSealOpen(t *testing.T) {
	block, _ := aes.NewCipher(bytes.Repeat([]byte{1}, 16))
	gcm, _ := cipher.NewGCM(block)
	l := NewForTest(gcm, []byte{1, 2, 3, 4}, 1)
	var sc Scratch
	pt := bytes.Repeat([]byte{0x45}, 1400)
	rec := l.Seal(&sc, make([]byte, 0, 2048), pt)
	if len(rec) != len(pt)+l.Overhead() {
		t.Fatalf("record %d bytes, want %d", len(rec), len(pt)+l.Overhead())
	}
	again := bytes.Clone(rec)
	got, ok := l.Open(rec)
	if !ok || !bytes.Equal(got, pt) {
		t.Fatal("a sealed record does not open")
	}
	if _, ok := l.Open(again); ok {
		t.Fatal("a replayed record opened")
	}
	bad := l.Seal(&sc, nil, pt)
	bad[len(bad)-1] ^= 1
	if _, ok := l.Open(bad); ok || l.Bad.Load() != 2 {
		t.Fatalf("a forged record opened (bad %d)", l.Bad.Load())
	}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(1000, func() { l.Seal(&sc, buf[:0], pt) }); n != 0 {
		t.Fatalf("Seal: %v allocations per record", n)
	}
}

// TestSealInPlace: a record sealed around its plaintext in the same buffer is byte for byte the record Seal makes
// (both nonce kinds), and sealing in place allocates nothing.
func TestSealInPlace(t *testing.T) {
	block, _ := aes.NewCipher(bytes.Repeat([]byte{1}, 16))
	gcm, _ := cipher.NewGCM(block)
	for _, tc := range []struct {
		name     string
		explicit bool
	}{{"explicit nonce", true}, {"implicit nonce", false}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := NewForTest(gcm, []byte{1, 2, 3, 4}, 1), NewForTest(gcm, []byte{1, 2, 3, 4}, 1)
			if !tc.explicit {
				// ChaCha20-Poly1305's layout (RFC 7905): a 12-byte IV XORed with the sequence number
				a.explicitNonce, b.explicitNonce = false, false
				a.sendIV = bytes.Repeat([]byte{7}, 12)
				b.sendIV = bytes.Repeat([]byte{7}, 12)
			}
			var sc Scratch
			pt := bytes.Repeat([]byte{0x45}, 1400)
			want := a.Seal(&sc, nil, pt)
			const start = 32
			buf := make([]byte, start+len(pt)+16)
			copy(buf[start:], pt)
			got := b.SealInPlace(&sc, buf, start, start+len(pt))
			if !bytes.Equal(got, want) {
				t.Fatalf("in place %x…, Seal %x…", got[:24], want[:24])
			}
			if n := testing.AllocsPerRun(1000, func() { b.SealInPlace(&sc, buf, start, start+len(pt)) }); n != 0 {
				t.Fatalf("SealInPlace: %v allocations per record", n)
			}
		})
	}
}
