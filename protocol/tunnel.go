package protocol

// A tunnel is one CONNECTed TLS connection carrying a session's CSTP frames. Flow:
//
//	client ──TLS──► readLoop (the connection's goroutine) ──DATA──► datapath Port.Send
//	                   │ DPD-REQ ──► ctrl queue                      │
//	datapath Deliver ──► data queue (bounded, drop newest when full) ─┴─► writeLoop ──one Write per frame──► TLS
//
// writeLoop is the only writer of the connection after the CONNECT response, so frames never interleave, and each
// frame is one tls.Conn.Write, hence one TLS record (protocol.md §6.2). It also runs the tunnel's timers (DPD,
// idle timeout) on a ticker. end() records the first reason the tunnel stops, queues an optional final frame
// (DISCONNECT or TERMINATE), and closes quit; writeLoop then writes what is left on the control queue and closes
// the connection, which ends readLoop.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/protocol/datapath"
)

const (
	dataQueueLen = 512
	ctrlQueueLen = 16
	// noFrame tells end() not to send a final frame.
	noFrame byte = 0xff
	// finalWriteTimeout bounds how long a stopping tunnel may spend writing its last frames.
	finalWriteTimeout = 2 * time.Second
	smallFrameSize    = cstpHeaderLen + 2048
)

// frame is a pooled buffer holding one CSTP frame (header included) in b[:n].
type frame struct {
	b []byte
	n int
}

var (
	smallFrames = sync.Pool{New: func() any { return &frame{b: make([]byte, smallFrameSize)} }}
	bigFrames   = sync.Pool{New: func() any { return &frame{b: make([]byte, cstpHeaderLen+maxCSTPPayload)} }}
)

// newFrame returns a frame of type typ holding a copy of payload (len(payload) <= maxCSTPPayload).
func newFrame(typ byte, payload []byte) *frame {
	var f *frame
	if cstpHeaderLen+len(payload) <= smallFrameSize {
		f = smallFrames.Get().(*frame)
	} else {
		f = bigFrames.Get().(*frame)
	}
	putCSTPHeader(f.b, typ, len(payload))
	f.n = cstpHeaderLen + copy(f.b[cstpHeaderLen:], payload)
	return f
}

func (f *frame) release() {
	if len(f.b) == smallFrameSize {
		smallFrames.Put(f)
	} else {
		bigFrames.Put(f)
	}
}

type tunnel struct {
	sess   *Session
	conn   net.Conn   // the *tls.Conn
	batch  *batchConn // below conn; the writer batches syscalls through it
	br     *bufio.Reader
	remote netip.AddrPort
	mtu    int
	dpd    time.Duration
	idle   time.Duration
	start  time.Time
	port   datapath.Port // set after attach

	data       chan *frame
	ctrl       chan *frame
	quit       chan struct{}
	writerDone chan struct{}
	endOnce    sync.Once
	reason     string // written once by end before quit is closed

	lastRecv atomic.Int64 // unix nanoseconds of the last frame received
	lastData atomic.Int64 // unix nanoseconds of the last DATA frame either way
}

func newTunnel(sess *Session, conn net.Conn, batch *batchConn, br *bufio.Reader, remote netip.AddrPort, mtu int, dpd, idle time.Duration) *tunnel {
	now := time.Now()
	t := &tunnel{
		sess: sess, conn: conn, batch: batch, br: br, remote: remote, mtu: mtu, dpd: dpd, idle: idle, start: now,
		data:       make(chan *frame, dataQueueLen),
		ctrl:       make(chan *frame, ctrlQueueLen),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	t.lastRecv.Store(now.UnixNano())
	t.lastData.Store(now.UnixNano())
	return t
}

// queueData queues an IP packet for the client. It never blocks: false means the packet was dropped.
func (t *tunnel) queueData(pkt []byte) bool {
	if len(pkt) > maxCSTPPayload {
		return false
	}
	f := newFrame(pktData, pkt)
	select {
	case t.data <- f:
		return true
	default:
		f.release()
		return false
	}
}

func (t *tunnel) queueCtrl(f *frame) {
	select {
	case t.ctrl <- f:
	default:
		f.release() // a client flooding DPD requests gets fewer answers
	}
}

// end stops the tunnel with reason (only the first call counts) and, unless final is noFrame, sends a last
// frame of that type (DISCONNECT or TERMINATE) before closing.
func (t *tunnel) end(reason string, final byte) {
	t.endOnce.Do(func() {
		t.reason = reason
		if final != noFrame {
			t.queueCtrl(newFrame(final, nil))
		}
		close(t.quit)
		// Unblock a writer stuck on a client that does not read, and a reader waiting for a client that is gone.
		t.conn.SetDeadline(time.Now().Add(finalWriteTimeout))
	})
}

// writeLoop is the tunnel's only writer; see the file comment.
func (t *tunnel) writeLoop() {
	defer close(t.writerDone)
	// Records written while more frames are queued are buffered below TLS and sent together when the queues run
	// dry: one write(2) for a burst instead of one per packet.
	t.batch.SetBatching(true)
	tick := time.NewTicker(t.tickInterval())
	defer tick.Stop()
	var dpdSentAt int64
	for {
		var f *frame
		select {
		case f = <-t.ctrl:
		default:
			select {
			case f = <-t.ctrl:
			case f = <-t.data:
			case now := <-tick.C:
				dpdSentAt = t.checkTimers(now, dpdSentAt)
				continue
			case <-t.quit:
				t.finish()
				return
			}
		}
		_, err := t.conn.Write(f.b[:f.n])
		if f.b[6] == pktData && err == nil {
			t.sess.txBytes.Add(uint64(f.n - cstpHeaderLen))
			t.sess.txPackets.Add(1)
			t.lastData.Store(time.Now().UnixNano())
		}
		f.release()
		if err == nil && len(t.data) == 0 && len(t.ctrl) == 0 {
			err = t.batch.Flush()
		}
		if err != nil {
			t.end("write error: "+describeNetErr(err), noFrame)
			t.finish()
			return
		}
	}
}

// finish writes the control frames still queued (the final DISCONNECT/TERMINATE) and closes the connection.
func (t *tunnel) finish() {
	defer t.batch.SetBatching(false)
	for {
		select {
		case f := <-t.ctrl:
			_, err := t.conn.Write(f.b[:f.n])
			f.release()
			if err != nil {
				t.conn.Close()
				return
			}
		default:
			t.batch.SetBatching(false) // flush, and let Close's alert go straight out
			t.conn.Close()
			return
		}
	}
}

func (t *tunnel) tickInterval() time.Duration {
	d := 30 * time.Second
	for _, v := range []time.Duration{t.dpd / 2, t.idle / 4} {
		if v > 0 && v < d {
			d = v
		}
	}
	return max(d, 250*time.Millisecond)
}

// checkTimers runs the dead-peer and idle checks (ocserv's rules, protocol.md §6.3): after 2×DPD of silence send
// a DPD request, after 3×DPD drop the tunnel (the cookie stays valid); idle timeout counts DATA only.
func (t *tunnel) checkTimers(now time.Time, dpdSentAt int64) int64 {
	if t.dpd > 0 {
		last := t.lastRecv.Load()
		silence := now.Sub(time.Unix(0, last))
		switch {
		case silence > 3*t.dpd:
			t.end(fmt.Sprintf("DPD timeout (nothing received for %s)", silence.Round(time.Second)), noFrame)
		case silence > 2*t.dpd && dpdSentAt < last+1:
			t.queueCtrl(newFrame(pktDPDReq, nil))
			dpdSentAt = now.UnixNano()
		}
	}
	if t.idle > 0 && now.Sub(time.Unix(0, t.lastData.Load())) > t.idle {
		t.end("idle timeout", pktDisconnect)
	}
	return dpdSentAt
}

// readLoop reads frames until the connection ends. It reports whether the client logged out (DISCONNECT with the
// user-disconnect reason), which invalidates the cookie.
func (t *tunnel) readLoop() (logout bool) {
	buf := make([]byte, cstpHeaderLen+maxCSTPPayload)
	for {
		typ, payload, err := readCSTPFrame(t.br, buf)
		if err != nil {
			t.end(readErrReason(err), noFrame)
			return false
		}
		now := time.Now().UnixNano()
		t.lastRecv.Store(now)
		switch typ {
		case pktData:
			if len(payload) == 0 {
				continue
			}
			t.lastData.Store(now)
			t.sess.rxBytes.Add(uint64(len(payload)))
			t.sess.rxPackets.Add(1)
			t.port.Send(payload)
		case pktDPDReq:
			// ocserv echoes the whole frame with only the type changed; so do we.
			t.queueCtrl(newFrame(pktDPDResp, payload))
		case pktDPDResp, pktKeepalive:
		case pktDisconnect:
			logout = len(payload) > 0 && payload[0] == disconnectUser
			msg := "client disconnected"
			if len(payload) > 1 {
				msg = fmt.Sprintf("client disconnected: %.80q", payload[1:])
			}
			t.end(msg, noFrame)
			return logout
		case pktCompressed:
			t.end("compressed frame received but no compression was negotiated", pktDisconnect)
			return false
		default:
			t.sess.srv.limitedLog("ignoring CSTP frame of unknown type", "user", t.sess.User, "type", typ)
		}
	}
}

// readErrReason turns a read error into a short reason for the log; a client that went away is not news.
func readErrReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "connection closed by client"
	case errors.Is(err, errBadMagic), errors.Is(err, errFrameTooLong):
		return "protocol error: " + err.Error()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "protocol error: " + err.Error()
	}
	return "read error: " + describeNetErr(err)
}

func describeNetErr(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout"
	}
	return err.Error()
}
