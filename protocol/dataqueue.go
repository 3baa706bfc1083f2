package protocol

// The tunnel's data queue: packets towards the client, from the datapath's goroutines (gVisor's TCP senders, a
// TUN device's reader) to the tunnel's writer. A bounded ring under a mutex rather than a channel, so that a
// burst is queued whole before the writer is woken (tunnel.kick): a channel send hands the first packet of a
// burst to the parked writer at once, which then wakes on another core, sends it alone and parks again while the
// rest is still being queued.

import "sync"

type dataQueue struct {
	mu   sync.Mutex
	ring [dataQueueLen]*frame
	head int // index of the oldest frame
	n    int // frames queued
	// wake holds a token when the writer should look at the queue (cap 1: producers never block on it).
	wake chan struct{}
}

func (q *dataQueue) init() { q.wake = make(chan struct{}, 1) }

// push queues f; false means the queue is full (f is still the caller's).
func (q *dataQueue) push(f *frame) bool {
	q.mu.Lock()
	if q.n == len(q.ring) {
		q.mu.Unlock()
		return false
	}
	q.ring[(q.head+q.n)%len(q.ring)] = f
	q.n++
	q.mu.Unlock()
	return true
}

// popN moves up to len(dst) of the oldest frames into dst and returns how many.
func (q *dataQueue) popN(dst []*frame) int {
	q.mu.Lock()
	k := min(len(dst), q.n)
	for i := range k {
		dst[i], q.ring[q.head] = q.ring[q.head], nil
		q.head = (q.head + 1) % len(q.ring)
	}
	q.n -= k
	q.mu.Unlock()
	return k
}

// signal wakes the writer (at most one token waits).
func (q *dataQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
