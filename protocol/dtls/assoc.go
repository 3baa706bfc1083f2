package dtls

// An association is one client address's DTLS state during and after pion's handshake. It is the net.PacketConn
// pion reads and writes: the demultiplexer feeds its queue, its writes go to the client's address through the
// shared socket. Once the fast path is on, pion is retired (conn.go) and the association only routes records.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"

	"ocgate/protocol/dtlsrec"
)

// pskSuites are the PSK suites pion offers, listed explicitly (its defaults contain no PSK suite). pion picks the
// first suite in the client's order that it supports: ChaCha20 for openconnect/GnuTLS. CBC suites are left out:
// their overhead (IV, MAC, padding) exceeds what the advertised MTU leaves room for.
var pskSuites = []pion.CipherSuiteID{
	pion.TLS_PSK_WITH_AES_128_GCM_SHA256,
	pion.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	pion.TLS_PSK_WITH_AES_128_CCM,
}

// pskSuitesAES is what a client that offers PSK AES-128-GCM gets: pion honours the client's order, and GnuTLS
// lists ChaCha20 first, which costs ~20 % more per record here than AES-GCM with AES-NI (measured in the DTLS
// spike that preceded package dtlsrec). Offering only AES-GCM makes it the server's choice, as ocserv's priority
// string does.
var pskSuitesAES = []pion.CipherSuiteID{pion.TLS_PSK_WITH_AES_128_GCM_SHA256}

// OverheadGCM is the per-packet cost of DTLS 1.2 with an AEAD suite with explicit nonce (AES-GCM/CCM: 13-byte
// record header + 8 nonce + 16 tag) plus the 1-byte packet type: what ocserv subtracts before the suite is known
// (link 1500 ⇒ tunnel MTU 1434 over IPv4). ChaCha20 (no explicit nonce) costs 8 bytes less, so every suite we
// offer fits the MTU we advertise.
const OverheadGCM = 1 + 13 + 8 + 16

// ExportPSK derives the DTLS key from the TLS connection that carried the CONNECT (docs/protocol.md §7.2). The nil
// context matters: for TLS 1.2 a non-nil one changes the output. TLS 1.2 sessions without Extended Master Secret
// (openconnect's GnuTLS priority string turns EMS off) need the tlsunsafeekm GODEBUG, set in go.mod.
func ExportPSK(cs tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial(exporterLabel, nil, exportedPSKLen)
}

// NewAppID returns a random App-ID.
func NewAppID() AppID {
	var id AppID
	rand.Read(id[:])
	return id
}

type assoc struct {
	d             *Server
	pc            *net.UDPConn // the socket of the group its ClientHello came in on: it sends there
	reg           *reg
	peer          netip.AddrPort
	peerAddr      *net.UDPAddr
	in            chan *datagram       // to pion (handshake, alerts; everything before the fast path is on)
	live          atomic.Pointer[Conn] // set while a tunnel takes the fast path's records (Attach)
	newcomer      atomic.Pointer[assoc]
	done          chan struct{}
	closeOnce     sync.Once
	handshakeDone atomic.Bool
	// pion's side, retired once the fast path has heard from the client, or after a quiet moment (retirePion): its
	// Close then ends only pion's goroutines, its writes are dropped (no close_notify reaches the client), what
	// would go to it is dropped.
	pionRetired atomic.Bool
	pionClosed  chan struct{}
	pionOnce    sync.Once
	suites      []pion.CipherSuiteID // PSK suites offered to this client
	// early holds the application records that come before the tunnel has attached (holdEarly, flushEarly). pion
	// keeps only one of those that reach it before it marks its handshake complete (its Read is not ready for them;
	// pion v3.1 drops the rest), and a client sends its first packets as soon as it has our Finished, which can be
	// before that mark is set here: a ping sent right after the handshake was lost one time in twelve.
	earlyMu   sync.Mutex
	early     []*datagram // guarded by earlyMu
	earlyDone bool        // guarded by earlyMu: flushed; records go their normal way

	readDL *deadline.Deadline // pion's read deadline
	keys   keyCapture         // the handshake's secrets, for the fast path's keys (keys.go)
}

// newcomer (above) is a handshake running beside this established association from the same address (a
// re-handshake, or another session's client behind the same NAT mapping): the datagrams from the address that are
// not application data go to it, until it completes and takes the address over (Server.promote) or fails.

var _ net.PacketConn = (*assoc)(nil)

type datagram struct {
	b []byte
	n int
}

var datagramPool = sync.Pool{New: func() any { return &datagram{b: make([]byte, datagramBufLen)} }}

func newAssoc(d *Server, r *reg, peer netip.AddrPort, pc *net.UDPConn) *assoc {
	return &assoc{d: d, pc: pc, reg: r, peer: peer, peerAddr: net.UDPAddrFromAddrPort(peer),
		in:   make(chan *datagram, handshakeQueueLen),
		done: make(chan struct{}), readDL: deadline.New(), pionClosed: make(chan struct{})}
}

// copyDatagram returns a datagram holding a copy of b.
func copyDatagram(b []byte) *datagram {
	var g *datagram
	if len(b) <= datagramBufLen {
		g = datagramPool.Get().(*datagram)
	} else {
		g = &datagram{b: make([]byte, len(b))}
	}
	g.n = copy(g.b, b)
	return g
}

// holdEarly keeps a copy of application record b until flushEarly (a full queue drops it); false once flushed:
// b then goes its normal way.
func (a *assoc) holdEarly(b []byte, st *stats) bool {
	a.earlyMu.Lock()
	defer a.earlyMu.Unlock()
	if a.earlyDone {
		return false
	}
	if len(a.early) >= handshakeQueueLen {
		st.queueFull.Add(1)
		return true
	}
	a.early = append(a.early, copyDatagram(b))
	return true
}

// flushEarly hands the held records to deliver (nil drops them: the handshake failed) and lets the next ones go
// their normal way. A record that arrives meanwhile may overtake the held ones; the replay window (64 records)
// takes them in any order.
func (a *assoc) flushEarly(deliver func(b []byte)) {
	a.earlyMu.Lock()
	held := a.early
	a.early, a.earlyDone = nil, true
	a.earlyMu.Unlock()
	for _, g := range held {
		if deliver != nil {
			deliver(g.b[:g.n])
		}
		releaseDatagram(g)
	}
}

// push queues a copy of b; a full queue drops it (the client's congestion control sees a loss).
func (a *assoc) push(b []byte, st *stats) {
	g := copyDatagram(b)
	if a.pionRetired.Load() {
		st.dropped.Add(1) // an alert or a stray handshake record: nobody reads them any more
		releaseDatagram(g)
		return
	}
	select {
	case a.in <- g:
	default:
		st.queueFull.Add(1)
		releaseDatagram(g)
	}
}

func releaseDatagram(g *datagram) {
	if len(g.b) == datagramBufLen {
		datagramPool.Put(g)
	}
}

func (a *assoc) close() {
	a.closeOnce.Do(func() { close(a.done) })
}

func (a *assoc) isClosed() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// established reports whether a (nil is fine) completed its handshake and is still open: an association a new
// ClientHello must not displace before the newcomer's handshake completes.
func (a *assoc) established() bool {
	return a != nil && a.handshakeDone.Load() && !a.isClosed()
}

// handshake runs pion's server over the association and hands the connection to the registration.
func (a *assoc) handshake() {
	defer a.d.wg.Done()
	psk := a.reg.psk
	opts := []pion.ServerOption{
		pion.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), // the identity ("psk") carries nothing
		pion.WithCipherSuites(a.suites...),
		// Request, never require: GnuTLS clients send no EMS in PSK mode (docs/protocol.md §11).
		pion.WithExtendedMasterSecret(pion.RequestExtendedMasterSecret),
		pion.WithInsecureSkipVerifyHello(true), // no HelloVerifyRequest round trip, like ocserv
		pion.WithMTU(pionMTU),
		pion.WithKeyLogWriter(&a.keys),
	}
	var err error
	if a.reg.legacy != nil {
		opts, err = a.reg.legacy.options(a.reg.appID[:])
	}
	var conn *pion.Conn
	if err == nil {
		conn, err = pion.ServerWithOptions(a, a.peerAddr, opts...)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err = conn.HandshakeContext(ctx)
		cancel()
	}
	if err != nil {
		a.d.stats.failed.Add(1)
		a.d.limitedLog("DTLS handshake failed", "remote", a.peer, "err", err)
		if conn != nil {
			conn.Close()
		}
		a.flushEarly(nil)
		a.d.failed(a)
		return
	}
	a.handshakeDone.Store(true)
	a.d.stats.completed.Add(1)
	st, _ := conn.ConnectionState()
	c := &Conn{assoc: a, suite: st.CipherSuiteID, heard: make(chan struct{})}
	c.pion.Store(conn)
	if !a.d.fastPath {
		// pion's record layer for everything (see NewServer)
	} else if l, ok := a.keys.layer(st.CipherSuiteID); ok && a.reg.legacy == nil {
		c.fast = &dtlsrec.Conn{Layer: l, PC: a.pc, Peer: a.peer}
	} else if f, err := dtlsrec.Dial(conn, a.pc, a.peer); err == nil {
		a.d.stats.keysFromState.Add(1)
		a.d.log.Debug("DTLS fast path keyed from pion's state", "peer", a.peer, "legacy", a.reg.legacy != nil)
		c.fast = f
	}
	if !a.d.promote(a) || a.isClosed() {
		conn.Close()
		a.flushEarly(nil)
		a.close()
		return
	}
	a.reg.established(c)
	if c.fast != nil {
		a.flushEarly(func(b []byte) {
			if c.openFast(b) {
				c.endBurst() // as drainPion does: this goroutine is not the socket's reader, which ends bursts
			}
		})
	} else {
		a.flushEarly(func(b []byte) { a.push(b, &a.d.stats) }) // pion's handshake is complete: it queues them now
	}
	if c.fast != nil {
		// Only now that the tunnel has attached its handlers: records the client sent meanwhile wait in pion's
		// queue and are delivered, not dropped (a packet sent right after the handshake would be lost).
		a.d.wg.Add(2)
		go c.drainPion()
		go c.retirePion()
	}
}

// ReadFrom implements net.PacketConn for pion: the next datagram of this association.
func (a *assoc) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case g := <-a.in:
		n := copy(p, g.b[:g.n])
		releaseDatagram(g)
		if !a.handshakeDone.Load() {
			a.keys.sawIncoming(p[:n])
		}
		return n, a.peerAddr, nil
	case <-a.done:
		return 0, nil, net.ErrClosed
	case <-a.pionClosed:
		return 0, nil, net.ErrClosed
	case <-a.readDL.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo sends to the association's client whatever address pion passes.
func (a *assoc) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-a.done:
		return 0, net.ErrClosed
	default:
	}
	if a.pionRetired.Load() {
		return len(p), nil
	}
	if !a.handshakeDone.Load() {
		a.keys.sawOutgoing(p)
	}
	return a.pc.WriteToUDPAddrPort(p, a.peer)
}

// Close is pion's: it closes the association, or only pion's side once it is retired.
func (a *assoc) Close() error {
	if a.pionRetired.Load() {
		a.pionOnce.Do(func() { close(a.pionClosed) })
		return nil
	}
	a.close()
	return nil
}

func (a *assoc) LocalAddr() net.Addr               { return a.pc.LocalAddr() }
func (a *assoc) SetDeadline(t time.Time) error     { return a.SetReadDeadline(t) }
func (a *assoc) SetWriteDeadline(time.Time) error  { return nil }
func (a *assoc) SetReadDeadline(t time.Time) error { a.readDL.Set(t); return nil }
