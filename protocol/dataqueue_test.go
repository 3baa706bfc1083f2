package protocol

import (
	"testing"

	"ocgate/protocol/datapath"
)

func TestDataQueue(t *testing.T) {
	var q dataQueue
	q.init()
	frames := make([]*frame, dataQueueLen+2)
	for i := range frames {
		frames[i] = (*frame)(&datapath.Buffer{N: i})
	}
	// Fill it, wrapping around the ring once: pop a few first so that head is not 0.
	for _, f := range frames[:3] {
		if !q.push(f) {
			t.Fatal("push into an empty queue failed")
		}
	}
	var out [sendChunk]*frame
	if n := q.popN(out[:2]); n != 2 || out[0] != frames[0] || out[1] != frames[1] {
		t.Fatalf("popN(2) = %d: %v %v", n, out[0], out[1])
	}
	for _, f := range frames[3:] {
		if !q.push(f) {
			t.Fatalf("push %d failed with %d queued", f.N, queued(&q))
		}
	}
	if queued(&q) != dataQueueLen {
		t.Fatalf("len = %d, want %d (full)", queued(&q), dataQueueLen)
	}
	extra := (*frame)(&datapath.Buffer{N: -1})
	if q.push(extra) {
		t.Fatal("push into a full queue succeeded")
	}
	// Everything comes out once, in order, in chunks.
	want := 2
	for {
		n := q.popN(out[:])
		if n == 0 {
			break
		}
		for _, f := range out[:n] {
			if f.N != want {
				t.Fatalf("popped frame %d, want %d", f.N, want)
			}
			want++
		}
	}
	if want != len(frames) || queued(&q) != 0 {
		t.Fatalf("popped up to %d, %d left", want, queued(&q))
	}
}

// A burst queued with held set wakes the writer once, at kick; a packet queued alone wakes it at once.
func TestQueueDataHeldWakesAtKick(t *testing.T) {
	tun := &tunnel{}
	tun.dq.init()
	woken := func() bool {
		select {
		case <-tun.dq.wake:
			return true
		default:
			return false
		}
	}
	for range 5 {
		if !tun.queueData(datapath.GetBuffer(100), true) {
			t.Fatal("queue full")
		}
	}
	if woken() {
		t.Fatal("the writer was woken before the burst ended")
	}
	tun.kick()
	if !woken() {
		t.Fatal("kick did not wake the writer")
	}
	if queued(&tun.dq) != 5 {
		t.Fatalf("%d frames queued, want 5", queued(&tun.dq))
	}
	if !tun.queueData(datapath.GetBuffer(100), false) || !woken() {
		t.Fatal("a packet queued alone did not wake the writer")
	}
}

// queued is how many frames q holds.
func queued(q *dataQueue) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
