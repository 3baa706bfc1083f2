//go:build linux

package tun

// The kernel-TUN datapath: one point-to-point TUN device per session (vpns0, vpns1...), as ocserv
// does. The kernel routes and forwards; ocgate moves packets between the session and its device and drops, before
// the device, what the session's egress policy refuses (restrict_user_to_routes, client_to_client,
// restrict_user_to_ports).
//
//	client ─► Port.Send: source checked (the session's address or its iroutes), then egress's decision
//	          (tunPort.check), copied into the port's batch, merged with its flow's previous TCP segment where the
//	          GRO rules allow (offload.go) ─► writeLoop: takes the whole batch, one write(2) per merged segment
//	device ─► readLoop: once readable, one read(2) into a pooled 64 KiB buffer returns a TCP (TSO) or UDP burst,
//	          cut in place into MTU-sized packets (split); each goes to the session's Deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"ocgate/egress"
	"ocgate/protocol/datapath"
)

// Datapath is the kernel-TUN datapath.
type Datapath struct {
	cfg    Config
	log    *slog.Logger
	policy *egress.Policy
	// peers maps every attached session's Policy.Client keys to its policy: an immutable snapshot, replaced
	// under peersMu, so that the per-packet check reads it without a lock or an allocation.
	peers   atomic.Pointer[map[netip.Addr]*egress.SessionPolicy]
	peersMu sync.Mutex

	mu     sync.Mutex
	ports  map[netip.Addr]*tunPort // guarded by mu: by client address
	closed bool                    // guarded by mu
	wg     sync.WaitGroup          // read loops
}

var _ datapath.Datapath = (*Datapath)(nil)

// New returns the kernel-TUN datapath. Devices are created as sessions attach.
func New(cfg Config) (*Datapath, error) {
	if cfg.Opener == nil {
		cfg.Opener = LocalOpener{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := (DeviceRequest{Prefix: cfg.Prefix, MTU: 1500, Local: cfg.Local, Peer: cfg.Local}).validate(); err != nil {
		return nil, err
	}
	return &Datapath{cfg: cfg, log: cfg.Logger, policy: cfg.policy(), ports: make(map[netip.Addr]*tunPort)}, nil
}

// Attach creates the session's device and starts moving its packets.
func (t *Datapath) Attach(s *datapath.Session) (datapath.Port, error) {
	var peer, peer6 netip.Addr
	for _, a := range s.Addrs {
		if a.Is4() {
			peer = a
		} else {
			peer6 = a
		}
	}
	if !peer.IsValid() {
		return nil, errors.New("the tun datapath needs an IPv4 address for the session")
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.New("datapath closed")
	}
	if _, dup := t.ports[peer]; dup {
		t.mu.Unlock()
		return nil, fmt.Errorf("address %s already attached", peer)
	}
	t.ports[peer] = nil // reserved while the device is created
	t.mu.Unlock()
	release := func() {
		t.mu.Lock()
		delete(t.ports, peer)
		t.mu.Unlock()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	local, local6 := t.cfg.Locals(peer, peer6)
	if !local6.IsValid() {
		peer6 = netip.Addr{}
	}
	fd, name, err := t.cfg.Opener.OpenDevice(ctx, DeviceRequest{
		Prefix: t.cfg.Prefix, MTU: s.MTU, Local: local, Peer: peer, Routes: s.IRoutes,
		Local6: local6, Peer6: peer6,
	})
	if err != nil {
		release()
		return nil, err
	}
	vnet, err := deviceHasVnetHdr(fd)
	if err == nil {
		err = unix.SetNonblock(fd, true) // through the runtime's poller: Close ends a read in progress
	}
	if err != nil {
		unixClose(fd)
		release()
		return nil, fmt.Errorf("using %s: %w", name, err)
	}
	p := newTUNPort(t, s, os.NewFile(uintptr(fd), name), name)
	p.vnet, p.fill.gro = vnet, vnet
	if vnet {
		p.offloads(true)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		p.file.Close()
		return nil, errors.New("datapath closed")
	}
	t.ports[peer] = p
	t.register(p)
	t.wg.Add(1)
	t.mu.Unlock()
	go p.readLoop()
	go p.writeLoop()
	t.log.Debug("device up", "device", name, "session", s.ID, "user", s.User, "peer", peer, "mtu", s.MTU)
	return p, nil
}

// register makes p's session a peer that other sessions' packets may reach (see tunPort.check).
func (t *Datapath) register(p *tunPort) {
	t.updatePeers(func(m map[netip.Addr]*egress.SessionPolicy) {
		for _, k := range p.keys {
			m[k] = p.pol
		}
	})
}

// unregister undoes register.
func (t *Datapath) unregister(p *tunPort) {
	t.updatePeers(func(m map[netip.Addr]*egress.SessionPolicy) {
		for _, k := range p.keys {
			if m[k] == p.pol {
				delete(m, k)
			}
		}
	})
}

func (t *Datapath) updatePeers(f func(map[netip.Addr]*egress.SessionPolicy)) {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	m := make(map[netip.Addr]*egress.SessionPolicy)
	if old := t.peers.Load(); old != nil {
		maps.Copy(m, *old)
	}
	f(m)
	t.peers.Store(&m)
}

// Close closes every port and waits for their read loops.
func (t *Datapath) Close() error {
	t.mu.Lock()
	t.closed = true
	ports := make([]*tunPort, 0, len(t.ports))
	for _, p := range t.ports {
		if p != nil {
			ports = append(ports, p)
		}
	}
	t.mu.Unlock()
	for _, p := range ports {
		p.Close()
	}
	t.wg.Wait()
	return nil
}

// tunPort is one session's device.
type tunPort struct {
	t    *Datapath
	sess *datapath.Session
	file *os.File // the device (nil in tests of the per-packet check)
	name string
	peer netip.Addr

	sources []netip.Prefix        // the session's addresses and its iroutes: accepted packet sources
	pol     *egress.SessionPolicy // judges every packet from the client
	keys    []netip.Addr          // the session's Policy.Client keys, in t.peers while attached

	// The write side (see writeLoop): Send adds to fill; writeLoop swaps it for an empty batch and writes it.
	vnet    bool          // every packet crossing the device has a virtio-net header
	wmu     sync.Mutex    // guards the fields below
	wfull   sync.Cond     // on wmu: fill is full
	fill    *coalescer    // guarded by wmu
	wshut   bool          // guarded by wmu: no more writes
	nogro   bool          // guarded by wmu: the kernel refused a merged segment; merge no more
	writing bool          // guarded by wmu: writeLoop is writing a batch
	nowSegs []segment     // guarded by wmu: writeNow's, kept so as to allocate nothing
	wkick   chan struct{} // one token: fill is no longer empty; closed on shutdown
	wdone   chan struct{} // closed when writeLoop returns

	closed    atomic.Bool
	closeOnce sync.Once

	offMu      sync.Mutex // orders offloads calls
	offloadsOn bool       // guarded by offMu

	dropSource, dropRoute, dropSize, dropPort, dropC2C atomic.Uint64
	dropMalformed                                      atomic.Uint64 // device reads split could not honour
}

var (
	_ datapath.CarrierAware = (*tunPort)(nil)
	_ datapath.Burster      = (*tunPort)(nil)
)

// Carrier turns the device's segmentation offloads on while the session's carrier is DTLS and off while it is
// TLS. Measured (TUN mode, stock openconnect): with 64 KiB TSO bursts going into a TLS channel, downloads
// stalled (server at 20-30% CPU): via ocproxy 122/167 Mbit/s with the offloads, 267/283 without (ocserv: 240);
// over DTLS the offloads save CPU (56-66% instead of 76-78%).
func (p *tunPort) Carrier(c datapath.Carrier) { p.offloads(c == datapath.CarrierDTLS) }

// offloads turns the device's TCP (and UDP) segmentation offloads on or off (TUNSETOFFLOAD): what the kernel may
// hand over in one read. Attach turns them on; with them off (or refused) the kernel hands over MTU-sized packets
// (checksums included), which the same read path takes. Writes may carry merged segments either way.
func (p *tunPort) offloads(on bool) {
	p.offMu.Lock()
	defer p.offMu.Unlock()
	if on == p.offloadsOn || p.closed.Load() {
		return
	}
	if p.file == nil {
		return
	}
	rc, err := p.file.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if on {
			if unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunOffloadsTCP|tunOffloadsUDP) != nil {
				err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunOffloadsTCP)
			}
		} else {
			err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, 0)
		}
	})
	if err == nil {
		p.offloadsOn = on
	}
}

// The offloads asked for: TCP (Linux 2.6 on, with IFF_VNET_HDR) and, where the kernel has it (6.2 on), UDP.
const (
	tunOffloadsTCP = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	tunOffloadsUDP = unix.TUN_F_USO4 | unix.TUN_F_USO6
)

func newTUNPort(t *Datapath, s *datapath.Session, file *os.File, name string) *tunPort {
	p := &tunPort{t: t, sess: s, file: file, name: name, pol: t.policy.Session(s)}
	for _, a := range s.Addrs {
		p.sources = append(p.sources, netip.PrefixFrom(a, a.BitLen()))
		if a.Is4() {
			p.peer = a
		}
		if k, ok := t.policy.Client(a); ok {
			p.keys = append(p.keys, k)
		}
	}
	p.sources = append(p.sources, s.IRoutes...)
	p.fill = &coalescer{}
	p.wfull.L = &p.wmu
	p.wkick = make(chan struct{}, 1)
	p.wdone = make(chan struct{})
	return p
}

// DeviceName returns the device's name (vpns0...).
func (p *tunPort) DeviceName() string { return p.name }

// Send passes one packet from the client to the device: into the batch that writeLoop writes, or, when nothing
// is pending and nothing could merge with it, straight to the device. Packets with a foreign source, or that the
// session's policy refuses, are dropped and counted.
func (p *tunPort) Send(pkt []byte) error { return p.send(pkt, false) }

// SendBurst is Send, except that writeLoop is not woken for the packet until EndBurst (or the batch is full), so
// that a burst from the client (a recvmmsg batch of DTLS records) is merged and written as a whole
// (datapath.Burster). Without it, writeLoop woke at the burst's first packet and wrote it alone.
func (p *tunPort) SendBurst(pkt []byte) error { return p.send(pkt, true) }

// EndBurst wakes writeLoop for the packets SendBurst batched.
func (p *tunPort) EndBurst() {
	p.wmu.Lock()
	if len(p.fill.segs) > 0 && !p.wshut {
		p.kickWriter()
	}
	p.wmu.Unlock()
}

// kickWriter wakes writeLoop (one token waits at most). The caller holds wmu and has checked wshut.
func (p *tunPort) kickWriter() {
	select {
	case p.wkick <- struct{}{}:
	default:
	}
}

func (p *tunPort) send(pkt []byte, burst bool) error {
	if p.closed.Load() {
		return os.ErrClosed
	}
	switch v, ok := p.check(pkt); {
	case !ok:
		p.dropSource.Add(1)
		return nil
	case v == egress.Allow:
	case v == egress.DenyPort:
		p.dropPort.Add(1)
		return nil
	case v == egress.DenyClientToClient:
		p.dropC2C.Add(1)
		return nil
	default:
		p.dropRoute.Add(1)
		return nil
	}
	if len(pkt) > maxPacket {
		p.dropSize.Add(1)
		return nil
	}
	p.wmu.Lock()
	for p.fill.full() && !p.wshut {
		p.wfull.Wait() // the previous batch is still being written: wait for writeLoop to take this one
	}
	if p.wshut {
		p.wmu.Unlock()
		return os.ErrClosed
	}
	if len(p.fill.segs) == 0 && !p.writing && !p.fill.mayMerge(pkt) {
		// Nothing waits to be written and nothing could join this packet (a pure ACK of a download, a UDP
		// datagram): write it now, in the caller's goroutine, rather than hand it over.
		p.writeNow(pkt)
		p.wmu.Unlock()
		return nil
	}
	if len(p.fill.segs) == 0 && !burst {
		p.kickWriter()
	}
	p.fill.add(pkt)
	if burst && p.fill.full() {
		p.kickWriter() // the next packet waits for writeLoop to take this batch
	}
	p.wmu.Unlock()
	return nil
}

// maxPacket is the largest packet Send takes: the largest CSTP payload; bigger ones are dropped and counted.
const maxPacket = 16384 + 64

// writeLoop writes the batches Send fills: it takes the whole batch at once (Send goes on filling an empty one
// meanwhile), so that packets that arrive while a write is in progress go out merged, and a lone packet goes out
// at once. Each segment is one write(2). Write errors (the device is down, a malformed packet the kernel refused)
// lose that packet only; a merged segment the kernel refuses is written again cut up, and the port merges no more.
func (p *tunPort) writeLoop() {
	defer close(p.wdone)
	spare := &coalescer{gro: p.vnet}
	for range p.wkick {
		p.wmu.Lock()
		p.fill, spare = spare, p.fill
		p.fill.gro = p.vnet && !p.nogro
		p.writing = true
		p.wfull.Broadcast()
		p.wmu.Unlock()
		for i := range spare.segs {
			s := &spare.segs[i]
			b := s.finish()
			if !p.vnet {
				b = b[vnetHdrLen:]
			}
			if _, err := p.file.Write(b); err != nil && s.merged > 0 {
				p.noMerge(b)
			}
		}
		spare.reset()
		p.wmu.Lock()
		p.writing = false
		p.wmu.Unlock()
	}
	spare.reset()
}

// writeNow writes one packet at once, behind an empty virtio-net header. The caller holds wmu: no batch is being
// written meanwhile, so packets keep their order.
func (p *tunPort) writeNow(pkt []byte) {
	var c coalescer // gro false: a copy behind an empty header
	c.segs = p.nowSegs[:0]
	c.add(pkt)
	b := c.segs[0].finish()
	if !p.vnet {
		b = b[vnetHdrLen:]
	}
	p.file.Write(b) // an error loses this packet only, as in writeLoop
	c.reset()
	p.nowSegs = c.segs
}

// noMerge writes the merged segment b cut up again, and turns merging off for the port's later batches.
func (p *tunPort) noMerge(b []byte) {
	p.wmu.Lock()
	if !p.nogro {
		p.nogro, p.fill.gro = true, false
		p.t.log.Warn("the device refused a merged TCP segment; writing packets one by one", "device", p.name)
	}
	p.wmu.Unlock()
	split(b, func(off, end int) {
		vnetHdr{}.put(b[off-vnetHdrLen:])
		p.file.Write(b[off-vnetHdrLen : end])
	})
}

// check is the per-packet check of a packet from the client: ok is false for a packet that does not parse or
// whose source is neither the session's address nor inside its iroutes; otherwise v is the policy's verdict.
func (p *tunPort) check(pkt []byte) (v egress.Verdict, ok bool) {
	src, f, ok := egress.ParsePacket(pkt)
	if !ok || !inAny(p.sources, src) {
		return egress.DenyNotRouted, false
	}
	if k, ok := p.t.policy.Client(f.Dst.Addr()); ok {
		if m := p.t.peers.Load(); m != nil {
			f.Peer = (*m)[k]
		}
	}
	return p.pol.Decide(f), true
}

// readLoop delivers the device's packets to the session until the device is closed. The read buffer comes from
// a pool once the device is readable, so that an idle session holds none; a TSO burst is cut in place (split).
func (p *tunPort) readLoop() {
	defer p.t.wg.Done()
	rc, err := p.file.SyscallConn()
	if err != nil {
		p.t.log.Error("device read", "device", p.name, "err", err)
		return
	}
	var (
		buf     *[vnetHdrLen + maxIPPacket]byte
		n       int
		readErr error
	)
	read := func(fd uintptr) bool {
		buf = bigSegBufs.Get().(*[vnetHdrLen + maxIPPacket]byte)
		n, readErr = unix.Read(int(fd), buf[:])
		if readErr == unix.EAGAIN {
			bigSegBufs.Put(buf)
			buf = nil
			return false // wait until readable
		}
		return true
	}
	// The packets of one read (a TSO segment cut up) are held and sent as one burst (KickSender).
	deliver := func(off, end int) {
		if !p.sess.DeliverCopyHeld(buf[off:end]) {
			p.dropMalformed.Add(1)
		}
	}
	failures := 0
	for {
		err := rc.Read(read)
		if err == nil {
			err = readErr
		}
		if err == nil && n > 0 {
			b := buf[:n]
			if !p.vnet {
				p.sess.Deliver(b)
			} else {
				if !split(b, deliver) {
					p.dropMalformed.Add(1)
				}
				p.sess.KickSender()
			}
		}
		if buf != nil {
			bigSegBufs.Put(buf)
			buf = nil
		}
		if err == nil {
			failures = 0
			continue
		}
		if p.closed.Load() || errors.Is(err, os.ErrClosed) {
			return
		}
		// Many failures in a row mean the device itself fails.
		if failures++; failures > 1000 {
			p.t.log.Error("device read keeps failing; closing it", "device", p.name, "err", err)
			p.Close()
			return
		}
		p.t.log.Debug("device read", "device", p.name, "err", err)
	}
}

// Close removes the device (closing its only descriptor makes the kernel delete it with its addresses and
// routes) and waits for nothing: the read loop ends on its own.
func (p *tunPort) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.wmu.Lock()
		p.wshut = true
		close(p.wkick)
		p.wfull.Broadcast()
		p.wmu.Unlock()
		<-p.wdone // no write in progress on a descriptor being closed
		p.file.Close()
		p.wmu.Lock()
		p.fill.reset() // packets not yet written are lost with the device
		p.wmu.Unlock()
		p.t.mu.Lock()
		if p.t.ports[p.peer] == p {
			delete(p.t.ports, p.peer)
		}
		p.t.unregister(p)
		p.t.mu.Unlock()
		s, r, z, o, c := p.dropSource.Load(), p.dropRoute.Load(), p.dropSize.Load(), p.dropPort.Load(), p.dropC2C.Load()
		if m := p.dropMalformed.Load(); s+r+z+o+c+m > 0 {
			p.t.log.Info("device closed", "device", p.name, "dropped_spoofed", s, "dropped_not_routed", r,
				"dropped_oversize", z, "dropped_port", o, "dropped_client_to_client", c, "dropped_device_reads", m)
		}
	})
	return nil
}

func unixClose(fd int) { unix.Close(fd) }
