package protocol

// The DTLS data channel (protocol.md §7). One UDP socket serves every session:
//
//	datagram ─► association of its source address? ─yes─► that association's queue ─► pion's record layer
//	              │ no
//	              └─► a ClientHello whose session_id (or extension 48018) is a registered App-ID?
//	                    ─yes─► a new association for that registration (replacing its previous one), handshake
//	                            in the association's own goroutine under a deadline
//	                    ─no──► dropped and counted (no allocation)
//
// A registration is made per CONNECT: the App-ID handed to the client and the PSK exported from that TLS
// connection. Each association runs pion's DTLS server over a virtual net.PacketConn fed by the demultiplexer;
// the virtual conn writes to the association's client address through the shared socket.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"
)

const (
	appIDLen              = 32
	dtlsHandshakeTimeout  = 10 * time.Second
	dtlsQueueLen          = 256
	dtlsHandshakeQueueLen = 32 // pion's queue: handshake flights, alerts, records before the fast path is on
	maxDatagram           = 65535
	udpBatchLen           = 32 // datagrams per recvmmsg(2)
	pionRetireDelay       = 500 * time.Millisecond
	// extAppID is the private ClientHello extension that openconnect 7.08–7.x used for the App-ID.
	extAppID = 48018
)

// dtlsSuites are the PSK suites pion offers, listed explicitly (its defaults contain no PSK suite). pion picks
// the first suite in the client's order that it supports: ChaCha20 for openconnect/GnuTLS. CBC suites are left
// out: their overhead (IV, MAC, padding) exceeds what the advertised MTU leaves room for.
var dtlsSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CCM,
}

// dtlsSuitesAES is what a client that offers PSK AES-128-GCM gets: pion honours the client's order, and GnuTLS
// lists ChaCha20 first, which costs ~20 % more per record here than AES-GCM with AES-NI
// (../shared/research/spike-dtls-netstack.md §1). Offering only AES-GCM makes it the server's choice, as ocserv's
// priority string does.
var dtlsSuitesAES = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_GCM_SHA256}

// helloOffers reports whether a ClientHello lists cipher suite id.
func helloOffers(b []byte, id uint16) bool {
	if len(b) < 60 {
		return false
	}
	p := 60 + int(b[59]) // after the session_id
	if p >= len(b) {
		return false
	}
	p += 1 + int(b[p]) // cookie
	if p+2 > len(b) {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if p+n > len(b) {
		return false
	}
	for i := p; i+2 <= p+n; i += 2 {
		if binary.BigEndian.Uint16(b[i:]) == id {
			return true
		}
	}
	return false
}

// exportPSK derives the DTLS key from the TLS connection that carried the CONNECT (protocol.md §7.2). The nil
// context matters: for TLS 1.2 a non-nil one changes the output. TLS 1.2 sessions without Extended Master Secret
// (openconnect's GnuTLS priority string turns EMS off) need the tlsunsafeekm GODEBUG, set in go.mod.
func exportPSK(cs tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial("EXPORTER-openconnect-psk", nil, 32)
}

func newAppID() [appIDLen]byte {
	var id [appIDLen]byte
	rand.Read(id[:])
	return id
}

// dtlsStats are the DTLS server's counters.
type dtlsStats struct {
	dropped, started, failed, completed, queueFull atomic.Uint64
}

type dtlsServer struct {
	fastPath bool // seal and open application records ourselves after pion's handshake (dtls_fast.go)
	pc       *net.UDPConn
	log      *slog.Logger
	stats    dtlsStats

	mu   sync.RWMutex
	regs map[[appIDLen]byte]*dtlsReg // guarded by mu
	// byAddr maps a client address to its association: read per datagram without locks (no lock shared by all
	// sessions per packet), changed under mu.
	byAddr  sync.Map // netip.AddrPort → *dtlsAssoc
	closed  bool     // guarded by mu
	wg      sync.WaitGroup
	lastLog atomic.Int64
}

// dtlsReg is one CONNECT's expectation of a DTLS handshake.
type dtlsReg struct {
	appID       [appIDLen]byte
	psk         []byte
	legacy      *dtlsLegacy // set for the legacy (resumption) mode instead of psk
	established func(*dtlsConn)
	cur         *dtlsAssoc // guarded by dtlsServer.mu
}

func newDTLSServer(pc *net.UDPConn, log *slog.Logger) *dtlsServer {
	pc.SetReadBuffer(4 << 20)
	pc.SetWriteBuffer(4 << 20)
	return &dtlsServer{pc: pc, log: log, regs: make(map[[appIDLen]byte]*dtlsReg)}
}

// register expects handshakes for appID keyed with psk; established is called for each one that completes.
func (d *dtlsServer) register(appID [appIDLen]byte, psk []byte, legacy *dtlsLegacy, established func(*dtlsConn)) (cancel func()) {
	r := &dtlsReg{appID: appID, psk: psk, legacy: legacy, established: established}
	d.mu.Lock()
	d.regs[appID] = r
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		if d.regs[appID] == r {
			delete(d.regs, appID)
		}
		a := r.cur
		r.cur = nil
		if a != nil {
			d.byAddr.CompareAndDelete(a.peer, a)
		}
		d.mu.Unlock()
		if a != nil {
			a.close()
		}
	}
}

// Serve reads datagrams until Close, udpBatchLen per system call where the OS allows.
func (d *dtlsServer) Serve() error {
	r, err := newUDPReader(d.pc, udpBatchLen, maxDatagram)
	if err != nil {
		return err
	}
	for {
		n, err := r.Read()
		if err != nil {
			d.mu.RLock()
			closed := d.closed
			d.mu.RUnlock()
			if closed {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue // an ICMP error reported on the socket, a memory shortage: not the socket's end
		}
		for i := range n {
			if b, from, ok := r.Datagram(i); ok {
				d.dispatch(b, from)
			} else {
				d.stats.dropped.Add(1)
			}
		}
	}
}

func (d *dtlsServer) assocOf(from netip.AddrPort) *dtlsAssoc {
	if v, ok := d.byAddr.Load(from); ok {
		return v.(*dtlsAssoc)
	}
	return nil
}

func (d *dtlsServer) dispatch(b []byte, from netip.AddrPort) {
	hello := isClientHello(b)
	a := d.assocOf(from)
	if a != nil && !hello {
		if b[0] == dtlsrec.AppData {
			if c := a.live.Load(); c != nil {
				c.openFast(b) // here, in the socket's reader: no queue, no goroutine per session
				return
			}
		}
		a.push(b, &d.stats)
		return
	}
	if !hello {
		d.stats.dropped.Add(1)
		return
	}
	id, ok := helloAppID(b)
	if !ok {
		d.stats.dropped.Add(1)
		return
	}
	d.mu.Lock()
	r := d.regs[id]
	if r == nil || d.closed {
		d.mu.Unlock()
		d.stats.dropped.Add(1)
		return
	}
	// A retransmitted ClientHello for the association being set up from the same address goes to it.
	if a != nil && a.reg == r && !a.handshakeDone.Load() {
		d.mu.Unlock()
		a.push(b, &d.stats)
		return
	}
	old := r.cur
	if old != nil {
		d.byAddr.CompareAndDelete(old.peer, old)
	}
	if prev := d.assocOf(from); prev != nil && prev != old {
		// The address belonged to another session's association (NAT reuse): that one is dead now.
		d.byAddr.Delete(from)
		defer prev.close()
	}
	na := newDTLSAssoc(d, r, from)
	na.suites = dtlsSuites
	if helloOffers(b, uint16(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256)) {
		na.suites = dtlsSuitesAES
	}
	r.cur = na
	d.byAddr.Store(from, na)
	d.wg.Add(1)
	d.mu.Unlock()
	if old != nil {
		old.close()
	}
	d.stats.started.Add(1)
	na.push(b, &d.stats)
	go na.handshake()
}

// Close closes the socket and every association, and waits for their goroutines.
func (d *dtlsServer) Close() error {
	d.mu.Lock()
	d.closed = true
	var as []*dtlsAssoc
	d.byAddr.Range(func(_, v any) bool {
		as = append(as, v.(*dtlsAssoc))
		return true
	})
	d.mu.Unlock()
	err := d.pc.Close()
	for _, a := range as {
		a.close()
	}
	d.wg.Wait()
	return err
}

func (d *dtlsServer) limitedLog(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := d.lastLog.Load()
	if now-last < int64(time.Second) || !d.lastLog.CompareAndSwap(last, now) {
		return
	}
	d.log.Info(msg, args...)
}

// isClientHello: record type handshake (22), epoch 0, handshake type ClientHello (1) at offset 13.
func isClientHello(b []byte) bool {
	return len(b) > 60 && b[0] == 22 && b[3] == 0 && b[4] == 0 && b[13] == 1
}

// helloAppID finds the App-ID of a ClientHello: the private extension 48018 if present (old clients), else the
// session_id. Offsets: 13 record header + 12 handshake header + 2 client_version + 32 random = 59, the
// session_id length.
func helloAppID(b []byte) (id [appIDLen]byte, ok bool) {
	if len(b) < 60 {
		return id, false
	}
	sidLen := int(b[59])
	p := 60 + sidLen
	if p > len(b) {
		return id, false
	}
	sid := b[60:p]
	if ext, found := findExtension(b, p); found {
		if len(ext) >= 1 && int(ext[0]) == len(ext)-1 && len(ext)-1 == appIDLen {
			copy(id[:], ext[1:])
			return id, true
		}
	}
	if len(sid) != appIDLen {
		return id, false
	}
	copy(id[:], sid)
	return id, true
}

// findExtension walks a ClientHello after the session_id (at p) to extension 48018.
func findExtension(b []byte, p int) ([]byte, bool) {
	if p >= len(b) {
		return nil, false
	}
	p += 1 + int(b[p]) // cookie
	if p+2 > len(b) {
		return nil, false
	}
	p += 2 + int(binary.BigEndian.Uint16(b[p:])) // cipher suites
	if p >= len(b) {
		return nil, false
	}
	p += 1 + int(b[p]) // compression methods
	if p+2 > len(b) {
		return nil, false
	}
	end := p + 2 + int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if end > len(b) {
		return nil, false
	}
	for p+4 <= end {
		typ, n := binary.BigEndian.Uint16(b[p:]), int(binary.BigEndian.Uint16(b[p+2:]))
		p += 4
		if p+n > end {
			return nil, false
		}
		if typ == extAppID {
			return b[p : p+n], true
		}
		p += n
	}
	return nil, false
}

// dtlsAssoc is one client address's DTLS association; it is the net.PacketConn pion reads and writes.
type dtlsAssoc struct {
	d             *dtlsServer
	reg           *dtlsReg
	peer          netip.AddrPort
	peerAddr      *net.UDPAddr
	in            chan *datagram           // to pion (handshake, alerts; everything before the fast path is on)
	live          atomic.Pointer[dtlsConn] // set while a tunnel takes the fast path's records (attach)
	done          chan struct{}
	closeOnce     sync.Once
	handshakeDone atomic.Bool
	// pion's side, retired once the fast path has heard from the client (retirePionLater): its Close then ends only
	// pion's goroutines, its writes are dropped (no close_notify reaches the client), what would go to it is
	// dropped.
	pionRetired atomic.Bool
	pionClosed  chan struct{}
	pionOnce    sync.Once
	suites      []dtls.CipherSuiteID // PSK suites offered to this client

	readDL *deadline.Deadline // pion's read deadline
}

type datagram struct {
	b []byte
	n int
}

var datagramPool = sync.Pool{New: func() any { return &datagram{b: make([]byte, 2048)} }}

func newDTLSAssoc(d *dtlsServer, r *dtlsReg, peer netip.AddrPort) *dtlsAssoc {
	return &dtlsAssoc{d: d, reg: r, peer: peer, peerAddr: net.UDPAddrFromAddrPort(peer),
		in:   make(chan *datagram, dtlsHandshakeQueueLen),
		done: make(chan struct{}), readDL: deadline.New(), pionClosed: make(chan struct{})}
}

// push queues a copy of b; a full queue drops it (the client's congestion control sees a loss).
func (a *dtlsAssoc) push(b []byte, st *dtlsStats) {
	var g *datagram
	if len(b) <= 2048 {
		g = datagramPool.Get().(*datagram)
	} else {
		g = &datagram{b: make([]byte, len(b))}
	}
	g.n = copy(g.b, b)
	q := a.in
	if a.pionRetired.Load() {
		st.dropped.Add(1) // an alert or a stray handshake record: nobody reads them any more
		releaseDatagram(g)
		return
	}
	select {
	case q <- g:
	default:
		st.queueFull.Add(1)
		releaseDatagram(g)
	}
}

func releaseDatagram(g *datagram) {
	if len(g.b) == 2048 {
		datagramPool.Put(g)
	}
}

func (a *dtlsAssoc) close() {
	a.closeOnce.Do(func() { close(a.done) })
}

// handshake runs pion's server over the association and hands the connection to the registration.
func (a *dtlsAssoc) handshake() {
	defer a.d.wg.Done()
	psk := a.reg.psk
	opts := []dtls.ServerOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), // the identity ("psk") carries nothing
		dtls.WithCipherSuites(a.suites...),
		// Request, never require: GnuTLS clients send no EMS in PSK mode (protocol.md §11).
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithInsecureSkipVerifyHello(true), // no HelloVerifyRequest round trip, like ocserv
		dtls.WithMTU(1400),
	}
	var err error
	if a.reg.legacy != nil {
		opts, err = a.reg.legacy.options(a.reg.appID[:])
	}
	var conn *dtls.Conn
	if err == nil {
		conn, err = dtls.ServerWithOptions(a, a.peerAddr, opts...)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), dtlsHandshakeTimeout)
		err = conn.HandshakeContext(ctx)
		cancel()
	}
	if err != nil {
		a.d.stats.failed.Add(1)
		a.d.limitedLog("DTLS handshake failed", "remote", a.peer, "err", err)
		if conn != nil {
			conn.Close()
		}
		a.close()
		return
	}
	a.handshakeDone.Store(true)
	a.d.stats.completed.Add(1)
	st, _ := conn.ConnectionState()
	c := &dtlsConn{assoc: a, suite: st.CipherSuiteID}
	c.pion.Store(conn)
	if !a.d.fastPath {
		// pion's record layer for everything (see Options.DTLSFastPath)
	} else if f, err := dtlsrec.Dial(conn, a.d.pc, a.peer); err == nil {
		c.fast = f
	}
	select {
	case <-a.done:
		conn.Close()
		return
	default:
	}
	a.reg.established(c)
	if c.fast != nil {
		// Only now that the tunnel has attached its handlers: records the client sent meanwhile wait in pion's
		// queue and are delivered, not dropped (a packet sent right after the handshake would be lost).
		a.d.wg.Add(1)
		go c.drainPion()
	}
}

// ReadFrom implements net.PacketConn for pion: the next datagram of this association.
func (a *dtlsAssoc) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case g := <-a.in:
		return a.deliver(p, g)
	case <-a.done:
		return 0, nil, net.ErrClosed
	case <-a.pionClosed:
		return 0, nil, net.ErrClosed
	case <-a.readDL.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (a *dtlsAssoc) deliver(p []byte, g *datagram) (int, net.Addr, error) {
	n := copy(p, g.b[:g.n])
	releaseDatagram(g)
	return n, a.peerAddr, nil
}

// WriteTo sends to the association's client whatever address pion passes.
func (a *dtlsAssoc) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-a.done:
		return 0, net.ErrClosed
	default:
	}
	if a.pionRetired.Load() {
		return len(p), nil
	}
	return a.d.pc.WriteToUDPAddrPort(p, a.peer)
}

// Close is pion's: it closes the association, or only pion's side once it is retired.
func (a *dtlsAssoc) Close() error {
	if a.pionRetired.Load() {
		a.pionOnce.Do(func() { close(a.pionClosed) })
		return nil
	}
	a.close()
	return nil
}
func (a *dtlsAssoc) LocalAddr() net.Addr { return a.d.pc.LocalAddr() }
func (a *dtlsAssoc) SetDeadline(t time.Time) error {
	return a.SetReadDeadline(t)
}
func (a *dtlsAssoc) SetWriteDeadline(time.Time) error { return nil }
func (a *dtlsAssoc) SetReadDeadline(t time.Time) error {
	a.readDL.Set(t)
	return nil
}

// dtlsConn is an established association.
//
// With the fast path, its records are handled where they arrive: the socket's reader opens each application
// record and calls the tunnel's handler (attach), and pion's leftovers (records that came before, decrypted by
// pion) are passed on by drainPion. No goroutine and no queue per session once pion is retired. Without the fast
// path, the tunnel reads records with ReadRecord.
type dtlsConn struct {
	// pion's connection: nil once retired (retirePionLater), so that its handshake state and buffers are freed while
	// the session stays.
	pion  atomic.Pointer[dtls.Conn]
	assoc *dtlsAssoc
	suite dtls.CipherSuiteID

	fast          *dtlsrec.Conn // nil: every record goes through pion
	retired       atomic.Bool   // the fast path has opened a record: pion is being retired (retirePionLater)
	probeAnswered atomic.Bool   // the client's first MTU probe was answered (tunnel.dtlsRecord)

	// The tunnel's handlers. Close takes mu, so once it returns no call is in progress or will start: nothing
	// reaches a tunnel after it let go of the association.
	mu       sync.RWMutex
	onRecord func(rec []byte) // guarded by mu; rec is valid during the call only
	onError  func(error)      // guarded by mu: pion's side failed before it was retired
	closed   bool             // guarded by mu
}

// attach hands c's records to onRecord from now on (fast path only).
func (c *dtlsConn) attach(onRecord func([]byte), onError func(error)) {
	c.mu.Lock()
	if !c.closed {
		c.onRecord, c.onError = onRecord, onError
		c.assoc.live.Store(c)
	}
	c.mu.Unlock()
}

func (c *dtlsConn) deliver(rec []byte) {
	c.mu.RLock()
	if c.onRecord != nil {
		c.onRecord(rec)
	}
	c.mu.RUnlock()
}

// openFast opens an application record in place (in the socket reader's buffer) and delivers it. The first good
// one retires pion.
func (c *dtlsConn) openFast(b []byte) {
	pt, ok := c.fast.Open(b)
	if !ok {
		return // counted in fast.Bad, or not for this epoch
	}
	if !c.retired.Load() && c.retired.CompareAndSwap(false, true) {
		c.retirePionLater()
	}
	c.deliver(pt)
}

// drainPion keeps pion reading, so that it answers handshake retransmissions and alerts; application data it
// returns (records queued before the fast path took over) is delivered like the fast path's.
func (c *dtlsConn) drainPion() {
	defer c.assoc.d.wg.Done()
	conn := c.pion.Load()
	if conn == nil {
		return // closed already
	}
	buf := make([]byte, 1+cstp.MaxPayload+64)
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
	}
}

// retirePionLater ends pion's part a moment after the client has sent application data under the new keys, which
// it does only after it received our Finished: no handshake retransmission can be due any more. The moment is for
// records the client sent before the tunnel attached (pion holds them until drainPion has passed them on). pion's
// goroutines and buffers (and drainPion) go; a close_notify the client may send later is dropped, the tunnel's
// DPD and the CSTP channel carry on as before. Memory per idle DTLS session: see the closing note of issue 6.
func (c *dtlsConn) retirePionLater() {
	c.assoc.d.wg.Add(1)
	go func() {
		defer c.assoc.d.wg.Done()
		t := time.NewTimer(pionRetireDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.assoc.done:
			return // Close closes pion
		}
		c.assoc.pionRetired.Store(true)
		if conn := c.pion.Swap(nil); conn != nil {
			conn.Close() // its close_notify is dropped by WriteTo; its Close of the PacketConn ends only pion's side
		}
	}()
}

// ReadRecord reads one record (a "type || payload" packet) through pion's record layer: associations without
// the fast path only.
func (c *dtlsConn) ReadRecord(buf []byte) (int, error) {
	return c.pion.Load().Read(buf)
}

// WriteRecord sends one record.
func (c *dtlsConn) WriteRecord(p []byte) error {
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

func (c *dtlsConn) Close() error {
	c.assoc.live.CompareAndSwap(c, nil)
	c.assoc.close()
	c.mu.Lock() // waits for a record being delivered
	c.closed = true
	c.onRecord, c.onError = nil, nil
	c.mu.Unlock()
	if conn := c.pion.Load(); conn != nil {
		return conn.Close()
	}
	return nil
}

func (c *dtlsConn) RemoteAddr() netip.AddrPort { return c.assoc.peer }

// CipherSuite names the suite in openconnect's notation.
func (c *dtlsConn) CipherSuite() string {
	switch c.suite {
	case dtls.TLS_PSK_WITH_AES_128_GCM_SHA256:
		return "(DTLS1.2)-(PSK)-(AES-128-GCM)"
	case dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return "(DTLS1.2)-(PSK)-(CHACHA20-POLY1305)"
	case dtls.TLS_PSK_WITH_AES_128_CCM:
		return "(DTLS1.2)-(PSK)-(AES-128-CCM)"
	case dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
		return "(DTLS1.2)-(AES-128-GCM)"
	case dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		return "(DTLS1.2)-(AES-256-GCM)"
	}
	return fmt.Sprintf("(DTLS1.2)-(PSK)-(0x%04x)", uint16(c.suite))
}

// dtlsOverheadGCM is the per-packet cost of DTLS 1.2 with an AEAD suite with explicit nonce (AES-GCM/CCM: 13-byte
// record header + 8 nonce + 16 tag) plus the 1-byte packet type: what ocserv subtracts before the suite is known
// (link 1500 ⇒ tunnel MTU 1434 over IPv4). ChaCha20 (no explicit nonce) costs 8 bytes less, so every suite we
// offer fits the MTU we advertise.
const dtlsOverheadGCM = 1 + 13 + 8 + 16
