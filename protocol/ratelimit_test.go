package protocol

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	if newTokenBucket(0) != nil || !newTokenBucket(0).allow(1<<30) {
		t.Fatal("rate 0 must mean no limit")
	}
	b := newTokenBucket(1 << 20) // burst 256 KiB
	n := 0
	for b.allow(1400) {
		n++
	}
	if burst := n * 1400; burst < 250<<10 || burst > 260<<10 {
		t.Fatalf("burst %d bytes, want about 256 KiB", burst)
	}
	b.last = b.last.Add(-time.Second) // a second later the bucket is full again
	if !b.allow(200 << 10) {
		t.Fatal("the bucket did not refill")
	}
}
