package main

// Giving the memory of a burst of logins back when the burst is over. Session set-up allocates far more than a
// session keeps (the TLS and DTLS handshakes, the XML forms): the heap grows to the collector's goal — at least
// 4 MiB with GOGC=100 — and after the next collection the freed pages stay with the process, since the runtime's
// scavenger returns them slowly and keeps a margin over the goal. So when logins stop, one forced collection and
// scavenge (debug.FreeOSMemory) returns the burst: with 500 sessions set up 16 at a time it took the anonymous PSS
// of the server's processes from 52.3 to 47.8 MiB (docs/performance.md), and with 20 stock clients connected one
// after another, which allocate ~3 MB, it took the anonymous memory per session from ~215 to ~195 KiB. One or two
// logins allocate too little to be worth a collection, and do not trigger one; nor does start-up (a first
// collection then would add the collector's own metadata to the fresh server, measured +0.4 MiB).
//
// It runs only after a burst (allocations since the last trim ≥ trimAfterAlloc), once the process has gone quiet
// (less than quietAlloc allocated in the last trimTick), and at most once per trimMinInterval: a server with steady
// logins never goes quiet and never pays for it, and the hot path allocates nothing, so established sessions do not
// count as activity.

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	trimTick        = time.Second
	trimMinInterval = 10 * time.Second
	trimAfterAlloc  = 1 << 20 // allocated since the last trim (start-up not counted): ~7 logins; less is not a burst
	// quietAlloc: allocated in one tick, still busy. Below one login (~140 KB in the network process): at 256 KiB,
	// stock clients connecting one after another (2-3 a second) looked quiet, the trim ran in the middle of the
	// burst and the garbage of its tail stayed. An idle server with established sessions allocates ~1 KB a second.
	quietAlloc = 32 << 10
)

// trimMemoryWhenQuiet runs until done is closed.
func trimMemoryWhenQuiet(done <-chan struct{}) {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(samples)
	lastAlloc, trimmedAt := samples[0].Value.Uint64(), samples[0].Value.Uint64()
	var lastTrim time.Time
	t := time.NewTicker(trimTick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			metrics.Read(samples)
			alloc := samples[0].Value.Uint64()
			quiet := alloc-lastAlloc < quietAlloc
			lastAlloc = alloc
			if quiet && alloc-trimmedAt >= trimAfterAlloc && now.Sub(lastTrim) >= trimMinInterval {
				debug.FreeOSMemory()
				metrics.Read(samples)
				lastAlloc, trimmedAt, lastTrim = samples[0].Value.Uint64(), samples[0].Value.Uint64(), time.Now()
			}
		}
	}
}
