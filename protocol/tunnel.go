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
	// dtlsQuietForSwitch: DTLS silence after which data arriving over TLS moves our sending to TLS as well.
	dtlsQuietForSwitch = time.Second
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
	in     io.Reader  // conn, or the request reader if it holds bytes past the CONNECT request
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

	// DTLS (dtls.go): the current association, whether data goes out on it, and when a record last came in.
	dtls         atomic.Pointer[dtlsConn]
	dtlsActive   atomic.Bool
	lastDTLSRecv atomic.Int64
	dtlsCancel   func()         // unregisters the App-ID; nil without DTLS
	dtlsMu       sync.Mutex     // orders dtlsEstablished against stopDTLS
	dtlsStopped  bool           // guarded by dtlsMu
	dtlsWG       sync.WaitGroup // DTLS read loops
	switchToTCP  time.Duration

	dbatch     *dtlsBatch // owned by writeLoop: fast-path records waiting for sendmmsg
	dbatchConn *dtlsConn  // the association dbatch was made for
}

func newTunnel(sess *Session, conn net.Conn, batch *batchConn, in io.Reader, remote netip.AddrPort, mtu int, dpd, idle time.Duration) *tunnel {
	now := time.Now()
	t := &tunnel{
		sess: sess, conn: conn, batch: batch, in: in, remote: remote, mtu: mtu, dpd: dpd, idle: idle, start: now,
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
		var err error
		if f.b[6] == pktData {
			if !t.sendDTLS(f) {
				_, err = t.conn.Write(f.b[:f.n])
			}
			if err == nil {
				t.sess.txBytes.Add(uint64(f.n - cstpHeaderLen))
				t.sess.txPackets.Add(1)
				t.lastData.Store(time.Now().UnixNano())
			}
		} else {
			_, err = t.conn.Write(f.b[:f.n])
		}
		f.release()
		if err == nil && len(t.data) == 0 && len(t.ctrl) == 0 {
			t.flushDTLS()
			err = t.batch.Flush()
		}
		if err != nil {
			t.end("write error: "+describeNetErr(err), noFrame)
			t.finish()
			return
		}
	}
}

// sendDTLS sends a DATA frame over DTLS when it is up and recently heard from. The DTLS record is the frame
// from byte 7 on: byte 7 of a CSTP header is 0, which is also the DATA type. false means "use CSTP".
func (t *tunnel) sendDTLS(f *frame) bool {
	if !t.dtlsActive.Load() {
		return false
	}
	c := t.dtls.Load()
	if c == nil {
		return false
	}
	var err error
	if c.fast != nil {
		// Fast path: sealed into the writer's batch, sent with one sendmmsg when the queue runs dry.
		if t.dbatchConn != c {
			t.flushDTLS()
			t.dbatch, err = newDTLSBatch(c.fast)
			if err != nil {
				t.dbatch = nil
				t.dropDTLS(c, "write error: "+err.Error())
				return false
			}
			t.dbatchConn = c
		}
		err = t.dbatch.add(f.b[cstpHeaderLen-1 : f.n])
	} else {
		err = c.WriteRecord(f.b[cstpHeaderLen-1 : f.n])
	}
	if err != nil {
		t.dropDTLS(c, "write error: "+err.Error())
		return false
	}
	t.sess.dtlsTxBytes.Add(uint64(f.n - cstpHeaderLen))
	return true
}

// flushDTLS sends the records batched for the fast path. A failed send loses that batch (DTLS is lossy anyway)
// and drops the association, as a failed single write does.
func (t *tunnel) flushDTLS() {
	if t.dbatch == nil || t.dbatch.n == 0 {
		return
	}
	if err := t.dbatch.flush(); err != nil {
		t.dropDTLS(t.dbatchConn, "write error: "+err.Error())
	}
}

// dtlsEstablished takes a new DTLS association for this tunnel (a client's re-handshake replaces the old one).
func (t *tunnel) dtlsEstablished(c *dtlsConn) {
	t.dtlsMu.Lock()
	if t.dtlsStopped {
		t.dtlsMu.Unlock()
		c.Close()
		return
	}
	if c.fast != nil {
		// Under dtlsMu, so that stopDTLS cannot have come and gone before the handlers are in place.
		c.attach(func(rec []byte) { t.dtlsRecord(c, rec) }, func(err error) { t.dtlsFailed(c, err) })
	} else {
		t.dtlsWG.Add(1)
	}
	t.dtlsMu.Unlock()
	if old := t.dtls.Swap(c); old != nil {
		old.Close()
	}
	t.lastDTLSRecv.Store(time.Now().UnixNano())
	t.dtlsActive.Store(true)
	t.carrier(datapath.CarrierDTLS)
	t.sess.srv.log.Info("DTLS established", "id", t.sess.ID, "user", t.sess.User, "remote", c.RemoteAddr(), "cipher", c.CipherSuite())
	if c.fast == nil {
		go t.dtlsReadLoop(c)
	}
}

// dropDTLS forgets association c (if still current): data goes over CSTP until the client comes back.
func (t *tunnel) dropDTLS(c *dtlsConn, why string) {
	if t.dtls.CompareAndSwap(c, nil) {
		t.dtlsActive.Store(false)
		t.carrier(datapath.CarrierTLS)
		c.Close()
		t.sess.srv.log.Info("DTLS down; using TLS", "id", t.sess.ID, "user", t.sess.User, "reason", why)
	}
}

// carrier tells a port that cares (datapath.CarrierAware) which carrier the session uses now.
func (t *tunnel) carrier(c datapath.Carrier) {
	if ca, ok := t.port.(datapath.CarrierAware); ok {
		ca.Carrier(c)
	}
}

func (t *tunnel) dtlsFailed(c *dtlsConn, err error) {
	select {
	case <-t.quit:
	default:
		t.dropDTLS(c, "read error: "+describeNetErr(err))
	}
}

// dtlsReadLoop reads the records of an association without the fast path, through pion.
func (t *tunnel) dtlsReadLoop(c *dtlsConn) {
	defer t.dtlsWG.Done()
	buf := make([]byte, 1+maxCSTPPayload+64) // pion's Read needs room for any record
	for {
		n, err := c.ReadRecord(buf)
		if err != nil {
			t.dtlsFailed(c, err)
			return
		}
		t.dtlsRecord(c, buf[:n])
	}
}

var (
	keepaliveRecord = []byte{pktKeepalive}
	probeWakeups    = []time.Duration{10 * time.Millisecond, 60 * time.Millisecond}
)

// dtlsRecord handles one record of association c: DATA into the datapath, DPD requests echoed in full
// (openconnect measures the MTU with them, protocol.md §7.5). With the fast path it runs in the UDP socket's
// reader, so it must not block; rec may be changed in place.
func (t *tunnel) dtlsRecord(c *dtlsConn, rec []byte) {
	if len(rec) == 0 {
		return
	}
	now := time.Now().UnixNano()
	t.lastDTLSRecv.Store(now)
	if t.dtls.Load() == c {
		t.dtlsActive.Store(true)
	}
	switch rec[0] {
	case pktData:
		n := len(rec) - 1
		if n == 0 {
			return
		}
		t.lastData.Store(now)
		t.sess.rxBytes.Add(uint64(n))
		t.sess.rxPackets.Add(1)
		t.sess.dtlsRxBytes.Add(uint64(n))
		if t.sess.rxLimit.allow(n) {
			t.port.Send(rec[1:])
		} else {
			t.sess.rxDropped.Add(1)
		}
	case pktDPDReq:
		rec[0] = pktDPDResp
		c.WriteRecord(rec)
		if len(rec) > 1 && c.probeAnswered.CompareAndSwap(false, true) {
			// The first MTU probe (a DPD request with padding), which openconnect sends right after the
			// handshake. openconnect 9.01 sets its "DTLS MTU detection" delay even when the handshake and the probe
			// finished before its main loop started (our answers take well under a millisecond), then sleeps in
			// select() for up to a second before it configures the tunnel, unless a datagram wakes it: one
			// connect in four took 1.08 s instead of 80 ms. A keepalive sent at once is read before that sleep
			// and does not count as work; two a little later wake it.
			for _, d := range probeWakeups {
				time.AfterFunc(d, func() { c.WriteRecord(keepaliveRecord) })
			}
		}
	case pktDPDResp, pktKeepalive:
	default:
		t.sess.srv.limitedLog("ignoring DTLS record", "user", t.sess.User, "type", rec[0])
	}
}

// stopDTLS unregisters the App-ID, closes the association and waits for its reader.
func (t *tunnel) stopDTLS() {
	t.dtlsMu.Lock()
	t.dtlsStopped = true
	t.dtlsMu.Unlock()
	if t.dtlsCancel != nil {
		t.dtlsCancel()
	}
	if c := t.dtls.Swap(nil); c != nil {
		if c.fast != nil {
			t.sess.srv.log.Debug("DTLS fast path", "id", t.sess.ID, "bad_records", c.fast.Bad.Load(),
				"queue_full", c.assoc.d.stats.queueFull.Load())
		}
		c.Close()
	}
	t.dtlsWG.Wait()
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
	if t.dtlsActive.Load() && t.switchToTCP > 0 && now.Sub(time.Unix(0, t.lastDTLSRecv.Load())) > t.switchToTCP {
		t.dtlsActive.Store(false) // quiet DTLS: send over TLS until a record arrives again
		t.sess.srv.log.Debug("DTLS quiet; sending over TLS", "id", t.sess.ID, "user", t.sess.User)
	}
	if t.idle > 0 && now.Sub(time.Unix(0, t.lastData.Load())) > t.idle {
		t.end("idle timeout", pktDisconnect)
	}
	return dpdSentAt
}

// readLoop reads frames until the connection ends. It reports whether the client logged out (DISCONNECT with the
// user-disconnect reason), which invalidates the cookie.
func (t *tunnel) readLoop() (logout bool) {
	buf := make([]byte, cstpHeaderLen+smallFrameSize)
	for {
		typ, payload, err := readCSTPFrameInto(t.in, &buf)
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
			// Data on TLS while DTLS is up: the client may have given up on UDP (ocserv switches at once,
			// protocol.md §7.5). But openconnect also sends single packets over TLS whenever its small UDP send
			// buffer is full; switching on each of those made our downloads flap between the channels and arrive
			// out of order. So switch only if DTLS has also been quiet for a moment.
			if now-t.lastDTLSRecv.Load() > int64(dtlsQuietForSwitch) {
				t.dtlsActive.Store(false)
			}
			if t.sess.rxLimit.allow(len(payload)) {
				t.port.Send(payload)
			} else {
				t.sess.rxDropped.Add(1)
			}
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
			if logout {
				// At once, not when the tunnel has finished closing: a CONNECT with this cookie that arrives
				// meanwhile must be refused, not take the session over.
				t.sess.logout(t)
			}
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
