package protocol

// A tunnel is one CONNECTed TLS connection carrying a session's CSTP frames. Flow:
//
//	client ──TLS──► readLoop (the connection's goroutine) ──DATA──► datapath Port.Send (SendBurst: see receiveData)
//	                   │ DPD-REQ ──► ctrl queue                      │
//	datapath Deliver ──► data queue (bounded, drop newest when full) ─┴─► writeLoop ──one Write per frame──► TLS
//
// A DATA frame is the datapath's packet buffer (datapath.Buffer) itself, its header written in the room before the
// packet (frame): the packet is not copied again on its way to the TLS write or the in-place DTLS seal.
//
// With compression negotiated at the CONNECT (docs/protocol.md §8), each channel has its codec: writeLoop sends a DATA
// packet as a COMPRESSED frame (record) when the packet is at least no_compress_limit long and the codec makes it
// shorter; COMPRESSED packets received on either channel are decoded (receiveCompressed) and go on as DATA.
//
// writeLoop is the only writer of the connection after the CONNECT response, so frames never interleave, and each
// frame is one tls.Conn.Write, hence one TLS record (docs/protocol.md §6.2). It also runs the tunnel's timers (DPD,
// idle timeout) on a ticker. end() records the first reason the tunnel stops, queues an optional final frame
// (DISCONNECT or TERMINATE), and closes quit; writeLoop then writes what is left on the control queue and closes
// the connection, which ends readLoop. A panic in any of the tunnel's goroutines ends its session (recoverPanic),
// not the process.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/protocol/compress"
	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

const (
	dataQueueLen = 512
	ctrlQueueLen = 16
	// noFrame tells end() not to send a final frame.
	noFrame byte = 0xff
	// finalWriteTimeout bounds how long a stopping tunnel may spend writing its last frames.
	finalWriteTimeout = 2 * time.Second
	// dtlsQuietForSwitch: DTLS silence after which data arriving over TLS moves our sending to TLS as well.
	dtlsQuietForSwitch = time.Second
)

// frame is a pooled packet buffer (datapath.Buffer) with its CSTP header written in the room before the packet:
// the frame is B[frameStart:Headroom+N], no copy of what the datapath wrote. Its DTLS record is the header's last
// byte (0, the DATA type, or the record's type) followed by the packet: B[Headroom-1:Headroom+N], sealed in place.
type frame datapath.Buffer

const frameStart = datapath.Headroom - cstp.HeaderLen

// Every CSTP payload fits a buffer.
var _ [datapath.MaxPacket - cstp.MaxPayload]struct{}

var (
	// decompressBufs hold the packets COMPRESSED frames decode to. A pool rather than a buffer per tunnel: the
	// receivers run in several goroutines (a DTLS socket's reader serves every session on it).
	decompressBufs = sync.Pool{New: func() any { return new([cstp.MaxPayload]byte) }}
)

// newFrame returns a frame of type typ holding a copy of payload (len(payload) <= cstp.MaxPayload).
func newFrame(typ byte, payload []byte) *frame {
	f := (*frame)(datapath.GetBuffer(len(payload)))
	copy(f.payload(), payload)
	f.setType(typ)
	return f
}

// setType writes the frame's CSTP header for its payload.
func (f *frame) setType(typ byte) { cstp.PutHeader(f.B[frameStart:], typ, f.N) }

func (f *frame) bytes() []byte            { return f.B[frameStart : datapath.Headroom+f.N] }
func (f *frame) payload() []byte          { return f.B[datapath.Headroom : datapath.Headroom+f.N] }
func (f *frame) record() []byte           { return f.B[datapath.Headroom-1 : datapath.Headroom+f.N] }
func (f *frame) buffer() *datapath.Buffer { return (*datapath.Buffer)(f) }
func (f *frame) release()                 { f.buffer().Release() }

type tunnel struct {
	sess *Session
	log  *slog.Logger
	// limitedLog logs at most about once a second, for what a client can trigger per packet.
	limitedLog   func(msg string, args ...any)
	firstConnect bool       // the session's first CONNECT (set by attachTunnel): the connect script runs
	conn         net.Conn   // the *tls.Conn
	batch        *batchConn // below conn; the writer batches syscalls through it
	in           io.Reader  // conn, or the request reader if it holds bytes past the CONNECT request
	remote       netip.AddrPort
	mtu          int
	dpd          time.Duration
	idle         time.Duration
	start        time.Time
	port         datapath.Port // set after attach
	// tlsBurst: readLoop has sent packets as a burst (datapath.Burster) that endTLSBurst has not ended yet. The
	// reader's only.
	tlsBurst bool

	dq         dataQueue // DATA frames towards the client (dataqueue.go)
	ctrl       chan *frame
	quit       chan struct{}
	writerDone chan struct{}
	endOnce    sync.Once
	reason     string // written once by end before quit is closed

	lastRecv atomic.Int64 // unix nanoseconds of the last frame received
	lastData atomic.Int64 // unix nanoseconds of the last DATA frame either way

	// DTLS (tunnel_dtls.go): the current association, whether data goes out on it, and when a record last came in.
	dtls         atomic.Pointer[dtls.Conn]
	dtlsActive   atomic.Bool
	lastDTLSRecv atomic.Int64
	dtlsCancel   func()         // unregisters the App-ID; nil without DTLS
	dtlsMu       sync.Mutex     // orders dtlsEstablished against stopDTLS
	dtlsStopped  bool           // guarded by dtlsMu
	dtlsWG       sync.WaitGroup // DTLS read loops
	switchToTCP  time.Duration

	dbatch     *dtls.Batch // owned by writeLoop: fast-path records waiting for sendmmsg
	dbatchConn *dtls.Conn  // the association dbatch was made for

	// Compression, negotiated at the CONNECT (nil: none on that channel) and set before the tunnel's goroutines
	// start and its DTLS App-ID is registered; read-only after.
	cstpCodec, dtlsCodec compress.Codec
	compressMin          int // no_compress_limit: shorter packets go uncompressed
	maxDecompressed      int // the longest packet a COMPRESSED frame may decode to: the link MTU
}

func newTunnel(sess *Session, conn net.Conn, batch *batchConn, in io.Reader, remote netip.AddrPort, mtu int, dpd, idle time.Duration,
	log *slog.Logger, limitedLog func(string, ...any)) *tunnel {
	now := time.Now()
	t := &tunnel{
		sess: sess, log: log, limitedLog: limitedLog, conn: conn, batch: batch, in: in, remote: remote, mtu: mtu, dpd: dpd, idle: idle, start: now,
		ctrl:       make(chan *frame, ctrlQueueLen),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	t.dq.init()
	t.lastRecv.Store(now.UnixNano())
	t.lastData.Store(now.UnixNano())
	if batch != nil {
		batch.beforeRead = t.endTLSBurst
	}
	return t
}

// endTLSBurst hands the packets readLoop sent as a burst to the datapath: before each read(2) on the connection,
// when crypto/tls has passed on all the records it read, and when readLoop ends.
func (t *tunnel) endTLSBurst() {
	if t.tlsBurst {
		t.tlsBurst = false
		t.port.(datapath.Burster).EndBurst()
	}
}

// queueData queues a packet for the client, framed in place in its buffer, and wakes the writer unless held (the
// datapath's burst goes on: kick follows). It never blocks: false means the queue is full and b is still the
// caller's.
func (t *tunnel) queueData(b *datapath.Buffer, held bool) bool {
	f := (*frame)(b)
	f.setType(cstp.Data)
	if !t.dq.push(f) {
		return false
	}
	if !held {
		t.dq.signal()
	}
	return true
}

// kick wakes the writer for the frames a datapath queued as a burst (queueData held).
//
// The datapath's goroutine does not send them itself, though it could while the writer is idle: tried (gVisor's
// TCP sender sealing and sending its own bursts), a download over DTLS lost 25-35 % of its rate, with 3-5× the
// datagrams dropped at the client's socket: the sender's bursts went out back to back, without the pause the
// hand-over gives the client to read.
func (t *tunnel) kick() { t.dq.signal() }

// sendChunk is how many frames the writer takes from the data queue at a time.
const sendChunk = 32

// countData counts a DATA frame of n bytes sent to the client (sendQueued stamps lastData once per chunk).
func (t *tunnel) countData(n int) {
	t.sess.txBytes.Add(uint64(n))
	t.sess.txPackets.Add(1)
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
	defer t.recoverPanic("writer")
	// Records written while more frames are queued are buffered below TLS and sent together when the queues run
	// dry: one write(2) for a burst instead of one per packet.
	t.batch.SetBatching(true)
	tick := time.NewTicker(t.tickInterval())
	defer tick.Stop()
	var dpdSentAt int64
	for {
		// Control frames first; then what the data queue holds; when both are empty, what was batched goes out
		// (records below TLS, the DTLS batch) and the writer waits.
		var err error
		select {
		case f := <-t.ctrl:
			err = t.writeCtrl(f)
		default:
			var n int
			if n, err = t.sendQueued(); n > 0 || err != nil {
				break
			}
			t.flushDTLS()
			if err = t.batch.Flush(); err != nil {
				break
			}
			select {
			case f := <-t.ctrl:
				err = t.writeCtrl(f)
			case <-t.dq.wake:
			case now := <-tick.C:
				dpdSentAt = t.checkTimers(now, dpdSentAt)
			case <-t.quit:
				t.finish()
				return
			}
		}
		if err != nil {
			t.end("write error: "+describeNetErr(err), noFrame)
			t.finish()
			return
		}
	}
}

// writeCtrl writes a control frame on the TLS connection (below TLS it waits for the next flush with the rest).
func (t *tunnel) writeCtrl(f *frame) error {
	_, err := t.conn.Write(f.bytes())
	f.release()
	return err
}

// sendQueued sends up to sendChunk queued DATA frames: over DTLS while it is up and recently heard from, else as
// CSTP frames over TLS. It returns how many it took from the queue (0: the queue was empty).
func (t *tunnel) sendQueued() (int, error) {
	var fs [sendChunk]*frame
	n := t.dq.popN(fs[:])
	if n > 0 {
		t.lastData.Store(time.Now().UnixNano())
	}
	for i, f := range fs[:n] {
		m := f.N // f is no longer ours once sent
		if t.sendDTLS(f) {
			t.countData(m)
			continue
		}
		err := t.writeData(f)
		f.release()
		if err != nil {
			for _, g := range fs[i+1 : n] {
				g.release()
			}
			return n, err
		}
		t.countData(m)
	}
	return n, nil
}

// writeData writes a DATA frame on the TLS connection, as a COMPRESSED frame when that pays (compressFrame).
func (t *tunnel) writeData(f *frame) error {
	z := t.compressFrame(t.cstpCodec, f)
	if z == nil {
		_, err := t.conn.Write(f.bytes())
		return err
	}
	_, err := t.conn.Write(z.bytes())
	z.release()
	if err == nil {
		t.sess.compressedOut.Add(1)
	}
	return err
}

// compressFrame returns the packet of DATA frame f compressed with c, as a COMPRESSED frame the caller releases;
// nil when c is nil, the packet is shorter than no_compress_limit, or c does not make it shorter (ocserv's rules,
// docs/protocol.md §8.2).
func (t *tunnel) compressFrame(c compress.Codec, f *frame) *frame {
	pkt := f.payload()
	if c == nil || len(pkt) < t.compressMin || len(pkt) < 2 {
		return nil
	}
	z := (*frame)(datapath.GetBuffer(len(pkt) - 1))
	n, err := c.Compress(z.payload(), pkt)
	if err != nil {
		z.release()
		return nil
	}
	z.N = n
	z.setType(cstp.Compressed)
	return z
}

// carrier tells a port that cares (datapath.CarrierAware) which carrier the session uses now.
func (t *tunnel) carrier(c datapath.Carrier) {
	if ca, ok := t.port.(datapath.CarrierAware); ok {
		ca.Carrier(c)
	}
}

// finish writes the control frames still queued (the final DISCONNECT/TERMINATE) and closes the connection.
func (t *tunnel) finish() {
	defer t.batch.SetBatching(false)
	if b := t.dbatch; b != nil && b.Sends > 0 {
		t.log.Debug("DTLS sends", "id", t.sess.ID, "sendmmsg", b.Sends, "records", b.Records)
	}
	for {
		select {
		case f := <-t.ctrl:
			_, err := t.conn.Write(f.bytes())
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

// checkTimers runs the dead-peer and idle checks (ocserv's rules, docs/protocol.md §6.3): after 2×DPD of silence send
// a DPD request, after 3×DPD drop the tunnel (the cookie stays valid); idle timeout counts DATA only.
func (t *tunnel) checkTimers(now time.Time, dpdSentAt int64) int64 {
	if t.dpd > 0 {
		last := t.lastRecv.Load()
		silence := now.Sub(time.Unix(0, last))
		switch {
		case silence > 3*t.dpd:
			t.end(fmt.Sprintf("DPD timeout (nothing received for %s)", silence.Round(time.Second)), noFrame)
		case silence > 2*t.dpd && dpdSentAt < last+1:
			t.queueCtrl(newFrame(cstp.DPDReq, nil))
			dpdSentAt = now.UnixNano()
		}
	}
	if t.dtlsActive.Load() && t.switchToTCP > 0 && now.Sub(time.Unix(0, t.lastDTLSRecv.Load())) > t.switchToTCP {
		t.dtlsActive.Store(false) // quiet DTLS: send over TLS until a record arrives again
		if st := t.sess.env.stats; st != nil {
			st.dtlsFallbacks.Add(1)
		}
		t.log.Debug("DTLS quiet; sending over TLS", "id", t.sess.ID, "user", t.sess.User)
	}
	if t.idle > 0 && now.Sub(time.Unix(0, t.lastData.Load())) > t.idle {
		t.end("idle timeout", cstp.Disconnect)
	}
	return dpdSentAt
}

// readLoop reads frames until the connection ends. It reports whether the client logged out (DISCONNECT with the
// user-disconnect reason), which invalidates the cookie.
func (t *tunnel) readLoop() (logout bool) {
	defer t.recoverPanic("reader")
	defer t.endTLSBurst()
	buf := make([]byte, 2*cstp.HeaderLen+2048)
	for {
		typ, payload, err := cstp.ReadFrame(t.in, &buf)
		if err != nil {
			t.end(readErrReason(err), noFrame)
			return false
		}
		now := time.Now().UnixNano()
		t.lastRecv.Store(now)
		switch typ {
		case cstp.Compressed:
			if t.cstpCodec == nil {
				t.end("compressed frame received but no compression was negotiated", cstp.Disconnect)
				return false
			}
			fallthrough
		case cstp.Data:
			if len(payload) == 0 {
				continue
			}
			// Data on TLS while DTLS is up: the client may have given up on UDP (ocserv switches at once,
			// docs/protocol.md §7.5). But openconnect also sends single packets over TLS whenever its small UDP send
			// buffer is full; switching on each of those made our downloads flap between the channels and arrive
			// out of order. So switch only if DTLS has also been quiet for a moment.
			if now-t.lastDTLSRecv.Load() > int64(dtlsQuietForSwitch) {
				t.dtlsActive.Store(false)
			}
			if typ == cstp.Compressed {
				t.receiveCompressed(t.cstpCodec, payload, now, false)
			} else {
				t.receiveData(payload, now, false)
			}
		case cstp.DPDReq:
			// ocserv echoes the whole frame with only the type changed; so do we.
			t.queueCtrl(newFrame(cstp.DPDResp, payload))
		case cstp.DPDResp, cstp.Keepalive:
		case cstp.Disconnect:
			logout = len(payload) > 0 && payload[0] == cstp.DisconnectUser
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
		default:
			t.limitedLog("ignoring CSTP frame of unknown type", "user", t.sess.User, "type", typ)
		}
	}
}

// recoverPanic, deferred by each of the tunnel's goroutines (and around the DTLS record handler, which runs in
// the shared UDP reader), turns a panic into the end of this tunnel and its session: logged with the stack, the
// connection closed, every other session and the process unaffected. The session ends in a goroutine of its own:
// the panic may have left a lock of the datapath held by this goroutine's caller.
func (t *tunnel) recoverPanic(where string) {
	p := recover()
	if p == nil {
		return
	}
	t.log.Error("panic in a tunnel; ending its session", "id", t.sess.ID, "user", t.sess.User, "in", where,
		"panic", p, "stack", string(debug.Stack()))
	t.end("internal error: panic in the "+where, noFrame)
	t.conn.Close()
	go t.sess.env.endSession(t.sess, "internal error: panic in the tunnel's "+where)
}

// receiveData takes an IP packet from the client, from either channel: counted, rate-limited, into the datapath.
func (t *tunnel) receiveData(pkt []byte, now int64, overDTLS bool) {
	if len(pkt) == 0 {
		return
	}
	t.lastData.Store(now)
	n := uint64(len(pkt))
	t.sess.rxBytes.Add(n)
	t.sess.rxPackets.Add(1)
	if overDTLS {
		t.sess.dtlsRxBytes.Add(n)
	}
	if t.sess.rxLimit.allow(len(pkt)) {
		// In bursts: DTLS records come in recvmmsg batches, each ended by endBurst (tunnel_dtls.go); TLS records
		// in reads, each ended by endTLSBurst. A TLS connection without a batchConn below (tests) sends singly.
		if b, ok := t.port.(datapath.Burster); ok && (overDTLS || t.batch != nil) {
			b.SendBurst(pkt)
			if !overDTLS {
				t.tlsBurst = true
			}
		} else {
			t.port.Send(pkt)
		}
	} else {
		t.sess.rxDropped.Add(1)
	}
}

// receiveCompressed decodes a COMPRESSED packet with the codec of the channel it came on and takes it as DATA. A
// packet that does not decode, or decodes to more than the link MTU, is dropped, counted and logged at a rate
// limit; the tunnel goes on.
func (t *tunnel) receiveCompressed(c compress.Codec, payload []byte, now int64, overDTLS bool) {
	buf := decompressBufs.Get().(*[cstp.MaxPayload]byte)
	n, err := c.Decompress(buf[:t.maxDecompressed], payload)
	if err != nil {
		t.sess.compressedBad.Add(1)
		t.limitedLog("dropping a compressed packet", "user", t.sess.User, "codec", c.Name(), "dtls", overDTLS,
			"len", len(payload), "err", err)
	} else {
		t.sess.compressedIn.Add(1)
		t.receiveData(buf[:n], now, overDTLS)
	}
	decompressBufs.Put(buf)
}

// readErrReason turns a read error into a short reason for the log; a client that went away is not news.
func readErrReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "connection closed by client"
	case errors.Is(err, cstp.ErrBadMagic), errors.Is(err, cstp.ErrFrameTooLong):
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
