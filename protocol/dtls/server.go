// Package dtls is the DTLS data channel of the OpenConnect protocol (docs/protocol.md §7): one UDP port serves
// every session. A Server demultiplexes datagrams to associations, runs pion's DTLS server for each handshake, and
// hands each established association (a Conn) to the registration that expected it; a Conn's application records
// are then opened and sealed by package dtlsrec (the fast path) and sent in batches (Batch).
//
//	datagram ─► association of its source address? ─yes─► application data ─► that association (fast path, or pion)
//	              │                                        anything else ─► the handshake running beside it from the
//	              │                                                         same address, if any, else that association
//	              │ no
//	              └─► a ClientHello whose session_id (or extension 48018) is a registered App-ID?
//	                    ─yes─► a new association for that registration, handshake in the association's own
//	                            goroutine under a deadline
//	                    ─no──► a fatal alert (rate-limited; unknown.go), so the client runs on CSTP at once
//
// Sockets: the server reads one UDP socket, or several bound to the same address in one SO_REUSEPORT group (Listen),
// each with its own reader goroutine. The kernel hashes a client's address and port to one socket of the group, so
// each reader (which also opens that client's records and runs the datapath's input for them) takes a share of the
// clients instead of one goroutine doing it for all. After each recvmmsg batch the reader ends the burst of every
// association it delivered records to (Conn.OnBurstEnd), so the datapath can take a batch's packets together. The association table is the server's, so any reader
// dispatches any datagram; an association sends on the socket its ClientHello came in on.
//
// A registration is made per CONNECT (Register): the App-ID handed to the client and the PSK exported from that
// TLS connection. Each association runs pion's DTLS server over a virtual net.PacketConn fed by the
// demultiplexer; the virtual conn writes to the association's client address through the shared socket.
//
// Replacement: a ClientHello is no proof of anything, since anyone can copy one off the wire and send it again
// from anywhere. So a new handshake for a registration whose association is established runs beside it, and
// replaces it (and takes over its source address, where another session's association sat) only once it
// completes, which takes the PSK. Until then the established association keeps receiving its records. A client
// that really moved (NAT rebinding) completes its handshake from the new address and takes over.
package dtls

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
)

const (
	// AppIDLen is the length of an App-ID (the ClientHello's session_id).
	AppIDLen          = 32
	handshakeTimeout  = 10 * time.Second
	handshakeQueueLen = 32 // pion's queue: handshake flights, alerts, records before the fast path is on
	// maxDatagram is the largest datagram the readers accept (a longer one is truncated and dropped): a record of
	// the largest link MTU (mtu: 9000) with room to spare for any suite's overhead. Each reader holds udpBatchLen
	// buffers of it, so 64 KiB here cost 2 MiB per socket of the group.
	maxDatagram           = 9216
	udpBatchLen           = 32 // datagrams per recvmmsg(2)
	pionRetireDelay       = 500 * time.Millisecond
	datagramBufLen        = 2048
	pionMTU               = 1400
	exporterLabel         = "EXPORTER-openconnect-psk"
	exportedPSKLen        = 32
	socketBufferSize      = 4 << 20
	limitedLogMinInterval = time.Second
)

// pionQuietRetireDelay: pion is retired this long after the handshake when the client has sent nothing (retirePion):
// it covers a client's retransmissions of its last flight at 1 s and 3 s. A variable for tests.
var pionQuietRetireDelay = 4 * time.Second

// AppID identifies a registration: the App-ID (PSK mode) or session id (legacy mode) the client puts in its
// ClientHello.
type AppID [AppIDLen]byte

// stats are the DTLS server's counters.
type stats struct {
	dropped, started, failed, completed, queueFull atomic.Uint64
	refusedUnknown                                 atomic.Uint64 // ClientHellos of unknown App-IDs (unknown.go)
	keysFromState                                  atomic.Uint64 // fast paths keyed from pion's state (keys.go)
}

// Server is the DTLS side of the VPN server: the demultiplexer of the shared UDP port's sockets.
type Server struct {
	fastPath     bool           // seal and open application records ourselves after pion's handshake (conn.go)
	pcs          []*net.UDPConn // one socket, or a SO_REUSEPORT group (Listen)
	unknownLimit unknownLimit   // alerts for unknown App-IDs (unknown.go)
	log          *slog.Logger
	stats        stats

	mu   sync.RWMutex
	regs map[AppID]*reg // guarded by mu
	// byAddr maps a client address to its association: read per datagram without locks (no lock shared by all
	// sessions per packet), changed under mu.
	byAddr  sync.Map // netip.AddrPort → *assoc
	closed  bool     // guarded by mu
	wg      sync.WaitGroup
	lastLog atomic.Int64
}

// reg is one CONNECT's expectation of a DTLS handshake.
type reg struct {
	appID       AppID
	psk         []byte
	legacy      *Legacy // set for the legacy (resumption) mode instead of psk
	established func(*Conn)
	cur         *assoc // guarded by Server.mu: the association that carries (or sets up) the session's DTLS
	next        *assoc // guarded by Server.mu: a handshake that replaces an established cur once it completes
}

// NewServer returns a server for the sockets pcs (one, or a group from Listen); fastPath turns on package
// dtlsrec's record layer for application data once pion's handshake is done.
func NewServer(pcs []*net.UDPConn, log *slog.Logger, fastPath bool) *Server {
	for _, pc := range pcs {
		pc.SetReadBuffer(socketBufferSize)
		pc.SetWriteBuffer(socketBufferSize)
	}
	return &Server{fastPath: fastPath, pcs: pcs, log: log, regs: make(map[AppID]*reg)}
}

// Register expects handshakes for appID, keyed with psk (PSK mode) or resuming legacy's session (legacy mode);
// established is called for each one that completes. cancel forgets the registration and closes its
// associations.
func (d *Server) Register(appID AppID, psk []byte, legacy *Legacy, established func(*Conn)) (cancel func()) {
	r := &reg{appID: appID, psk: psk, legacy: legacy, established: established}
	d.mu.Lock()
	d.regs[appID] = r
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		if d.regs[appID] == r {
			delete(d.regs, appID)
		}
		d.dropLocked(r.next)
		d.dropLocked(r.cur)
		d.mu.Unlock()
	}
}

// Serve reads datagrams until Close, one reader per socket, udpBatchLen datagrams per system call where the OS
// allows. It returns nil after Close, else the first reader's error (the others go on until Close).
func (d *Server) Serve() error {
	errs := make(chan error, len(d.pcs))
	for _, pc := range d.pcs[1:] {
		go func() { errs <- d.serve(pc) }()
	}
	err := d.serve(d.pcs[0])
	if err == nil {
		for range d.pcs[1:] {
			if e := <-errs; e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}

// serve is the reader of socket pc.
func (d *Server) serve(pc *net.UDPConn) error {
	r, err := newUDPReader(pc, udpBatchLen, maxDatagram)
	if err != nil {
		return err
	}
	burst := make([]*Conn, 0, udpBatchLen) // the associations whose records this batch delivered: their bursts end with it
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
				if c := d.dispatch(pc, b, from); c != nil {
					burst = append(burst, c)
				}
			} else {
				d.stats.dropped.Add(1)
			}
		}
		for i, c := range burst {
			c.endBurst()
			burst[i] = nil
		}
		burst = burst[:0]
	}
}

func (d *Server) assocOf(from netip.AddrPort) *assoc {
	if v, ok := d.byAddr.Load(from); ok {
		return v.(*assoc)
	}
	return nil
}

// dispatch handles datagram b from client address from, read from socket pc. It returns the association whose
// burst the datagram started (Conn.openFast), if any.
func (d *Server) dispatch(pc *net.UDPConn, b []byte, from netip.AddrPort) *Conn {
	hello := isClientHello(b)
	a := d.assocOf(from)
	if a != nil && !hello {
		if b[0] == dtlsrec.AppData {
			if c := a.live.Load(); c != nil {
				if c.openFast(b) { // here, in the socket's reader: no queue, no goroutine per session
					return c
				}
				return nil
			}
			if a.holdEarly(b, &d.stats) {
				return nil // until the tunnel has attached (assoc.go)
			}
		} else if n := a.newcomer.Load(); n != nil {
			n.push(b, &d.stats) // the flights of a handshake running beside a
			return nil
		}
		a.push(b, &d.stats)
		return nil
	}
	if !hello {
		d.stats.dropped.Add(1)
		return nil
	}
	id, ok := helloAppID(b)
	if !ok {
		d.stats.dropped.Add(1)
		return nil
	}
	d.mu.Lock()
	r := d.regs[id]
	if r == nil || d.closed {
		closed := d.closed
		d.mu.Unlock()
		if !closed {
			d.refuseUnknown(pc, b, from) // unknown.go: a session owned elsewhere, or ended
		} else {
			d.stats.dropped.Add(1)
		}
		return nil
	}
	if p := handshakeFrom(a, r); p != nil {
		// A retransmitted ClientHello for the handshake in progress from this address.
		d.mu.Unlock()
		p.push(b, &d.stats)
		return nil
	}
	na := newAssoc(d, r, from, pc)
	na.suites = pskSuites
	if helloOffers(b, uint16(pion.TLS_PSK_WITH_AES_128_GCM_SHA256)) {
		na.suites = pskSuitesAES
	}
	d.dropLocked(r.next)
	if r.cur.established() {
		r.next = na // replaces cur when (if) its handshake completes: see the package comment
	} else {
		d.dropLocked(r.cur)
		r.cur = na
	}
	if a.established() {
		d.dropLocked(a.newcomer.Load())
		a.newcomer.Store(na)
	} else {
		// The address belonged to a handshake that never completed, or to an association that is closed: no
		// longer anyone's.
		d.dropLocked(a)
		d.byAddr.Store(from, na)
	}
	d.wg.Add(1)
	d.mu.Unlock()
	d.stats.started.Add(1)
	na.push(b, &d.stats)
	go na.handshake()
	return nil
}

// handshakeFrom returns the handshake of r in progress from a's address: a itself, or the one running beside it.
func handshakeFrom(a *assoc, r *reg) *assoc {
	if a == nil {
		return nil
	}
	if a.reg == r && !a.handshakeDone.Load() && !a.isClosed() {
		return a
	}
	if n := a.newcomer.Load(); n != nil && n.reg == r && !n.isClosed() {
		return n
	}
	return nil
}

// promote makes a, whose handshake has completed, its registration's association and the owner of its source
// address, closing what it replaces. false means a was replaced or cancelled meanwhile. d.mu must not be held.
func (d *Server) promote(a *assoc) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := a.reg
	switch {
	case r.cur == a:
	case r.next == a:
		old := r.cur
		r.cur, r.next = a, nil
		d.dropLocked(old)
	default:
		return false
	}
	if h := d.assocOf(a.peer); h != a {
		// a ran beside h, which had its address: the client proved that the address is its now.
		if h != nil {
			h.newcomer.CompareAndSwap(a, nil)
			d.dropLocked(h)
		}
		d.byAddr.Store(a.peer, a)
	}
	return true
}

// dropLocked unlinks x (nil is fine) from its registration and from the address map, and closes it. A handshake
// that ran beside x from the same address inherits the address. d.mu must be held.
func (d *Server) dropLocked(x *assoc) {
	if x == nil {
		return
	}
	if x.reg.cur == x {
		x.reg.cur = nil
	}
	if x.reg.next == x {
		x.reg.next = nil
	}
	if h := d.assocOf(x.peer); h == x {
		if n := x.newcomer.Swap(nil); n != nil {
			d.byAddr.Store(x.peer, n)
		} else {
			d.byAddr.Delete(x.peer)
		}
	} else if h != nil {
		h.newcomer.CompareAndSwap(x, nil)
	}
	x.close()
}

// failed forgets a whose handshake failed.
func (d *Server) failed(a *assoc) {
	d.mu.Lock()
	d.dropLocked(a)
	d.mu.Unlock()
}

// Close closes the socket and every association, and waits for their goroutines.
func (d *Server) Close() error {
	d.mu.Lock()
	d.closed = true
	var as []*assoc
	d.byAddr.Range(func(_, v any) bool {
		as = append(as, v.(*assoc))
		return true
	})
	for _, r := range d.regs {
		as = append(as, r.cur, r.next)
	}
	d.mu.Unlock()
	var err error
	for _, pc := range d.pcs {
		if e := pc.Close(); err == nil {
			err = e
		}
	}
	for _, a := range as {
		if a != nil {
			a.close()
			if n := a.newcomer.Load(); n != nil {
				n.close()
			}
		}
	}
	d.wg.Wait()
	return err
}

func (d *Server) limitedLog(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := d.lastLog.Load()
	if now-last < int64(limitedLogMinInterval) || !d.lastLog.CompareAndSwap(last, now) {
		return
	}
	d.log.Info(msg, args...)
}
