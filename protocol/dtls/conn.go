package dtls

// An established association, as the tunnel sees it.
//
// With the fast path, its records are handled where they arrive: the socket's reader opens each application
// record (package dtlsrec) and calls the tunnel's handler (Attach), and pion's leftovers (records that came
// before, decrypted by pion) are passed on by drainPion. No goroutine and no queue per session once pion is
// retired. Without the fast path, the tunnel reads records with ReadRecord.

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
)

// pionReadBufLen is what pion's Read needs: room for any record.
const pionReadBufLen = 1 + cstp.MaxPayload + 64

// Conn is an established association: records are "type || payload" packets (docs/protocol.md §7.5).
// WriteRecord may be called from one goroutine at a time; Close from any.
type Conn struct {
	// pion's connection: nil once retired (retirePion), so that its handshake state and buffers are freed while
	// the session stays.
	pion  atomic.Pointer[pion.Conn]
	assoc *assoc
	suite pion.CipherSuiteID

	fast *dtlsrec.Conn // nil: every record goes through pion
	// openMu serialises fast.Open (its replay window). The kernel keeps a client's address and port on one socket
	// of a SO_REUSEPORT group, so one reader opens all of an association's records and the lock is uncontended;
	// it keeps the window right should the group rehash (a socket closing) while records arrive.
	openMu        sync.Mutex
	retired       atomic.Bool   // pion is being retired (retirePion)
	heard         chan struct{} // closed when the fast path has opened its first record
	probeAnswered atomic.Bool   // FirstProbe has said true

	// The tunnel's handlers. Close takes mu, so once it returns no call is in progress or will start: nothing
	// reaches a tunnel after it let go of the association.
	mu         sync.RWMutex
	onRecord   func(rec []byte) // guarded by mu; rec is valid during the call only
	onBurstEnd func()           // guarded by mu: the records of a recvmmsg batch have all been delivered
	onError    func(error)      // guarded by mu: pion's side failed before it was retired
	closed     bool             // guarded by mu
	// inBurst is set by the socket's reader when it delivers a record of this association, and cleared when it
	// ends the burst (Server.serve).
	inBurst atomic.Bool
}

// Fast reports whether the fast path handles the application records: they are then delivered to the handlers
// given to Attach, and sent in batches (NewBatch). Otherwise the caller reads them with ReadRecord.
func (c *Conn) Fast() bool { return c.fast != nil }

// Attach hands c's records to onRecord from now on (fast path only). onRecord runs in the UDP socket's reader and
// must not block; rec is valid during the call only and may be changed in place. onError reports that pion's side
// failed before the fast path took over.
func (c *Conn) Attach(onRecord func(rec []byte), onError func(error)) {
	c.mu.Lock()
	if !c.closed {
		c.onRecord, c.onError = onRecord, onError
		c.assoc.live.Store(c)
	}
	c.mu.Unlock()
}

// OnBurstEnd has f called (fast path only) after the records of one batch of datagrams (one recvmmsg) have been
// delivered to onRecord, and after each record pion passes on: onRecord may hold work until then (a
// datapath.Burster's). f runs in the socket's reader too and must not block.
func (c *Conn) OnBurstEnd(f func()) {
	c.mu.Lock()
	if !c.closed {
		c.onBurstEnd = f
	}
	c.mu.Unlock()
}

func (c *Conn) endBurst() {
	c.inBurst.Store(false)
	c.mu.RLock()
	if c.onBurstEnd != nil {
		c.onBurstEnd()
	}
	c.mu.RUnlock()
}

func (c *Conn) deliver(rec []byte) {
	c.mu.RLock()
	if c.onRecord != nil {
		c.onRecord(rec)
	}
	c.mu.RUnlock()
}

// openFast opens an application record in place (in the socket reader's buffer) and delivers it. The first good
// one retires pion. It reports whether the delivery started a burst, which the caller must end (endBurst).
func (c *Conn) openFast(b []byte) (started bool) {
	c.openMu.Lock()
	pt, ok := c.fast.Open(b)
	c.openMu.Unlock()
	if !ok {
		return false // counted in fast.Bad, or not for this epoch
	}
	if !c.retired.Load() && c.retired.CompareAndSwap(false, true) {
		close(c.heard) // retirePion
	}
	c.deliver(pt)
	return !c.inBurst.Swap(true)
}

// drainPion keeps pion reading, so that it answers handshake retransmissions and alerts; application data it
// returns (records queued before the fast path took over) is delivered like the fast path's.
func (c *Conn) drainPion() {
	defer c.assoc.d.wg.Done()
	conn := c.pion.Load()
	if conn == nil {
		return // closed already
	}
	// Every record pion decrypts came in a datagram the socket readers accepted, so its plaintext fits in
	// maxDatagram bytes: 9 KiB of garbage per session instead of pionReadBufLen's 16 (drainPion ends when pion is
	// retired). A pool kept them longer: sync.Pool holds its buffers through two collections.
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if !c.retired.Load() {
				c.mu.RLock()
				fail := c.onError
				c.mu.RUnlock()
				if fail != nil {
					fail(err)
				}
			}
			return
		}
		c.deliver(buf[:n])
		c.endBurst()
	}
}

// retirePion ends pion's part (fast path only) a moment after the client has sent application data under the new
// keys, which it does only after it received our Finished: no handshake retransmission can be due any more. The
// moment is for records the client sent before the tunnel attached (pion holds them until drainPion has passed them
// on). A client that sends nothing (an idle session, which may not send for a DPD interval) has pion retired
// pionQuietRetireDelay after the handshake: one that lost our Finished has retransmitted its last flight by then
// (DTLS timers start at 1 s and double, RFC 6347 §4.2.4.1) and pion has answered it. pion's goroutines and buffers
// (and drainPion) go; a close_notify or a late retransmission the client may send afterwards is dropped (such a
// client redoes its handshake later), the tunnel's DPD and the CSTP channel carry on as before. Memory per idle
// DTLS session: see the closing note of issue 6, and docs/performance.md.
func (c *Conn) retirePion() {
	defer c.assoc.d.wg.Done()
	quiet := time.NewTimer(pionQuietRetireDelay)
	defer quiet.Stop()
	select {
	case <-c.heard:
		t := time.NewTimer(pionRetireDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.assoc.done:
			return // Close closes pion
		}
	case <-quiet.C:
		if !c.retired.CompareAndSwap(false, true) {
			<-c.heard // the first record came just now: retire at once, as it has been quiet until then
		}
	case <-c.assoc.done:
		return
	}
	c.assoc.pionRetired.Store(true)
	if conn := c.pion.Swap(nil); conn != nil {
		conn.Close() // its close_notify is dropped by WriteTo; its Close of the PacketConn ends only pion's side
	}
}

// ReadRecord reads one record through pion's record layer into buf, which must hold at least RecordBufLen bytes:
// associations without the fast path only.
func (c *Conn) ReadRecord(buf []byte) (int, error) {
	return c.pion.Load().Read(buf)
}

// RecordBufLen is the buffer ReadRecord needs.
const RecordBufLen = pionReadBufLen

// WriteRecord sends one record.
func (c *Conn) WriteRecord(p []byte) error {
	if c.fast != nil {
		select {
		case <-c.assoc.done:
			return net.ErrClosed
		default:
		}
		return c.fast.Write(p)
	}
	_, err := c.pion.Load().Write(p)
	return err
}

// FirstProbe reports true exactly once per association: for the client's first MTU probe.
func (c *Conn) FirstProbe() bool { return c.probeAnswered.CompareAndSwap(false, true) }

// Close detaches the handlers (no call is in progress once it returns) and closes the association.
func (c *Conn) Close() error {
	c.assoc.live.CompareAndSwap(c, nil)
	c.assoc.close()
	c.mu.Lock() // waits for a record being delivered
	c.closed = true
	c.onRecord, c.onBurstEnd, c.onError = nil, nil, nil
	c.mu.Unlock()
	if conn := c.pion.Load(); conn != nil {
		return conn.Close()
	}
	return nil
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.assoc.peer }

// Counters are for debug logs: records the fast path could not open, and datagrams dropped by the server because
// an association's queue was full (all associations).
func (c *Conn) Counters() (badRecords, queueFull uint64) {
	if c.fast != nil {
		badRecords = c.fast.Bad.Load()
	}
	return badRecords, c.assoc.d.stats.queueFull.Load()
}

// CipherSuite names the suite in openconnect's notation.
func (c *Conn) CipherSuite() string {
	switch c.suite {
	case pion.TLS_PSK_WITH_AES_128_GCM_SHA256:
		return "(DTLS1.2)-(PSK)-(AES-128-GCM)"
	case pion.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return "(DTLS1.2)-(PSK)-(CHACHA20-POLY1305)"
	case pion.TLS_PSK_WITH_AES_128_CCM:
		return "(DTLS1.2)-(PSK)-(AES-128-CCM)"
	case pion.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, pion.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
		return "(DTLS1.2)-(AES-128-GCM)"
	case pion.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, pion.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		return "(DTLS1.2)-(AES-256-GCM)"
	}
	return fmt.Sprintf("(DTLS1.2)-(PSK)-(0x%04x)", uint16(c.suite))
}
