package protocol

// The tunnel's DTLS half (package dtls does the channel itself). Flow:
//
//	CONNECT ──► Register(App-ID, PSK) ──► client's handshake ──► dtlsEstablished: the association becomes the
//	            tunnel's (a re-handshake replaces the previous one)
//	records ──► dtlsRecord (in the UDP socket's reader with the fast path, else in dtlsReadLoop)
//	              DATA ──► receiveData, the same path as DATA frames over TLS
//	              COMPRESSED ──► receiveCompressed with the DTLS codec, then receiveData
//	              DPD-REQ ──► answered at once over DTLS
//	writeLoop ──► sendDTLS: DATA frames go over DTLS while it is up and recently heard from (compressed with the
//	              DTLS codec when that pays), sealed into a batch that flushDTLS sends with one sendmmsg when the
//	              queues run dry
//
// An association that fails is dropped (dropDTLS) and data goes over TLS until the client comes back.

import (
	"time"

	"ocgate/protocol/cstp"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

var (
	keepaliveRecord = []byte{cstp.Keepalive}
	probeWakeups    = []time.Duration{10 * time.Millisecond, 60 * time.Millisecond}
)

// sendDTLS sends a DATA frame over DTLS when it is up and recently heard from. The DTLS record is the frame
// from byte 7 on: byte 7 of a CSTP header is 0, which is also the DATA type (a COMPRESSED record gets its type
// there). true means f is no longer the caller's (the fast path's batch holds it until it is sent, or it was
// released); false means "use CSTP", and f is untouched.
func (t *tunnel) sendDTLS(f *frame) bool {
	if !t.dtlsActive.Load() {
		return false
	}
	c := t.dtls.Load()
	if c == nil {
		return false
	}
	rec := f
	z := t.compressFrame(t.dtlsCodec, f)
	if z != nil {
		z.B[datapath.Headroom-1] = cstp.Compressed
		rec = z
	}
	var err error
	batched := false
	if c.Fast() {
		// Fast path: sealed in place into the batch, sent with one sendmmsg when the queue runs dry.
		if t.dbatchConn != c {
			t.flushDTLS()
			t.dbatch, err = c.NewBatch()
			if err != nil {
				t.dbatch, t.dbatchConn = nil, nil
				t.dropDTLS(c, "write error: "+err.Error())
				if z != nil {
					z.release()
				}
				return false
			}
			t.dbatchConn = c
		}
		err = t.dbatch.Add(rec.buffer()) // on error rec is untouched
		batched = err == nil
	} else {
		err = c.WriteRecord(rec.record())
	}
	if z != nil && !batched {
		z.release()
	}
	if err != nil {
		t.dropDTLS(c, "write error: "+err.Error())
		return false
	}
	t.sess.dtlsTxBytes.Add(uint64(f.N))
	if z != nil {
		t.sess.compressedOut.Add(1)
	}
	if rec != f || !batched {
		f.release()
	}
	return true
}

// flushDTLS sends the records batched for the fast path. A failed send loses that batch (DTLS is lossy anyway)
// and drops the association, as a failed single write does.
func (t *tunnel) flushDTLS() {
	if t.dbatch == nil || t.dbatch.Len() == 0 {
		return
	}
	if err := t.dbatch.Flush(); err != nil {
		t.dropDTLS(t.dbatchConn, "write error: "+err.Error())
	}
}

// dtlsEstablished takes a new DTLS association for this tunnel (a client's re-handshake replaces the old one).
func (t *tunnel) dtlsEstablished(c *dtls.Conn) {
	t.dtlsMu.Lock()
	if t.dtlsStopped {
		t.dtlsMu.Unlock()
		c.Close()
		return
	}
	if c.Fast() {
		// Under dtlsMu, so that stopDTLS cannot have come and gone before the handlers are in place.
		c.OnBurstEnd(t.endBurst)
		c.Attach(func(rec []byte) {
			defer t.recoverPanic("DTLS record handler")
			t.dtlsRecord(c, rec)
		}, func(err error) { t.dtlsFailed(c, err) })
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
	t.log.Info("DTLS established", "id", t.sess.ID, "user", t.sess.User, "remote", c.RemoteAddr(), "cipher", c.CipherSuite())
	if !c.Fast() {
		go t.dtlsReadLoop(c)
	}
}

// dropDTLS forgets association c (if still current): data goes over CSTP until the client comes back.
func (t *tunnel) dropDTLS(c *dtls.Conn, why string) {
	if t.dtls.CompareAndSwap(c, nil) {
		t.dtlsActive.Store(false)
		t.carrier(datapath.CarrierTLS)
		c.Close()
		t.endBurst() // a burst Close cut short
		t.log.Info("DTLS down; using TLS", "id", t.sess.ID, "user", t.sess.User, "reason", why)
	}
}

func (t *tunnel) dtlsFailed(c *dtls.Conn, err error) {
	select {
	case <-t.quit:
	default:
		t.dropDTLS(c, "read error: "+describeNetErr(err))
	}
}

// dtlsReadLoop reads the records of an association without the fast path, through pion.
func (t *tunnel) dtlsReadLoop(c *dtls.Conn) {
	defer t.dtlsWG.Done()
	defer t.recoverPanic("DTLS reader")
	buf := make([]byte, dtls.RecordBufLen)
	for {
		n, err := c.ReadRecord(buf)
		if err != nil {
			t.dtlsFailed(c, err)
			return
		}
		t.dtlsRecord(c, buf[:n])
		t.endBurst()
	}
}

// endBurst hands the packets of the DTLS records received since the last call to the datapath (receiveData sends
// them as a burst, datapath.Burster): after each recvmmsg batch on the fast path, after each record otherwise.
func (t *tunnel) endBurst() {
	defer t.recoverPanic("DTLS burst end")
	if b, ok := t.port.(datapath.Burster); ok {
		b.EndBurst()
	}
}

// dtlsRecord handles one record of association c: DATA into the datapath, DPD requests echoed in full
// (openconnect measures the MTU with them, docs/protocol.md §7.5). With the fast path it runs in the UDP socket's
// reader, so it must not block; rec may be changed in place.
func (t *tunnel) dtlsRecord(c *dtls.Conn, rec []byte) {
	if len(rec) == 0 {
		return
	}
	now := time.Now().UnixNano()
	t.lastDTLSRecv.Store(now)
	if t.dtls.Load() == c {
		t.dtlsActive.Store(true)
	}
	switch rec[0] {
	case cstp.Data:
		t.receiveData(rec[1:], now, true)
	case cstp.DPDReq:
		rec[0] = cstp.DPDResp
		c.WriteRecord(rec)
		if len(rec) > 1 && c.FirstProbe() {
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
	case cstp.Compressed:
		if t.dtlsCodec == nil {
			t.limitedLog("ignoring compressed DTLS record: no compression was negotiated", "user", t.sess.User)
			return
		}
		t.receiveCompressed(t.dtlsCodec, rec[1:], now, true)
	case cstp.DPDResp, cstp.Keepalive:
	default:
		t.limitedLog("ignoring DTLS record", "user", t.sess.User, "type", rec[0])
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
		if c.Fast() {
			bad, queueFull := c.Counters()
			t.log.Debug("DTLS fast path", "id", t.sess.ID, "bad_records", bad, "queue_full", queueFull)
		}
		c.Close()
		t.endBurst()
	}
	t.dtlsWG.Wait()
}
