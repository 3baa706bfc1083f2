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
