package protocol

import (
	"sync"
	"time"
)

// tokenBucket limits a session's bytes per second in one direction (rx_data_per_sec / tx_data_per_sec). Packets
// over the limit are dropped, not delayed: TCP inside the tunnel backs off, and nothing queues. Its lock belongs to
// one session, so sessions never contend.
type tokenBucket struct {
	rate  float64 // bytes per second
	burst float64

	mu     sync.Mutex
	tokens float64   // guarded by mu
	last   time.Time // guarded by mu
}

// newTokenBucket returns nil (no limit) for rate 0. The burst is a quarter second of traffic, at least 64 KiB.
func newTokenBucket(rate int) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	burst := max(float64(rate)/4, 64<<10)
	return &tokenBucket{rate: float64(rate), burst: burst, tokens: burst, last: time.Now()}
}

// allow takes n bytes' worth of tokens, or reports false and takes none.
func (b *tokenBucket) allow(n int) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}
