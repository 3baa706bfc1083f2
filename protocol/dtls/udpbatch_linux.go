package dtls

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpReader reads datagrams in batches with recvmmsg(2): one system call for up to its batch size, and nothing
// allocated per datagram (x/net's ReadBatch makes a net.UDPAddr for each). It belongs to one goroutine.
type udpReader struct {
	rc     syscall.RawConn
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet6 // big enough for either family
	bufs   [][]byte
	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool // the method value, made once
}

func newUDPReader(pc *net.UDPConn, batch, size int) (*udpReader, error) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &udpReader{rc: rc, msgs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch), bufs: make([][]byte, batch)}
	for i := range r.msgs {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
		r.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.readFn = r.recvmmsg
	return r, nil
}

func (r *udpReader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for the poller
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// Read waits for datagrams and returns how many it read (at least one unless err is set).
func (r *udpReader) Read() (int, error) {
	for i := range r.msgs {
		r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.msgs[i].Hdr.Flags = 0
		r.msgs[i].Len = 0
	}
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	return r.n, nil
}

// Datagram returns datagram i of the last Read and its source; ok=false for a truncated one (bigger than the
// buffers) or an unknown address family. b is valid until the next Read.
func (r *udpReader) Datagram(i int) (b []byte, from netip.AddrPort, ok bool) {
	m := &r.msgs[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, from, false
	}
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), portFromNet(sa4.Port))
	case unix.AF_INET6:
		from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), portFromNet(sa.Port))
	default:
		return nil, from, false
	}
	return r.bufs[i][:m.Len], from, true
}

// portFromNet reads a sockaddr's port, which is in network byte order in the uint16.
func portFromNet(p uint16) uint16 {
	var b [2]byte
	*(*uint16)(unsafe.Pointer(&b[0])) = p
	return binary.BigEndian.Uint16(b[:])
}

// udpWriter sends batches of datagrams to one peer with sendmmsg(2), and with UDP generic segmentation offload
// (UDP_SEGMENT, Linux 4.18) where it can: a run of equal-sized datagrams (the last may be shorter) goes down the
// stack as one buffer that the kernel or the device cuts up, instead of one trip per datagram. A kernel or device
// that refuses it turns it off for the whole process, and the batch is sent again datagram by datagram.
// It belongs to one goroutine; nothing is allocated per send.
type udpWriter struct {
	rc      syscall.RawConn
	name    unix.RawSockaddrInet6 // the peer, in the socket's family
	nameLen uint32
	msgs    []unix.Mmsghdr
	iovs    []unix.Iovec
	oob     []byte // one UDP_SEGMENT control message per msgs entry
	sendN   int    // msgs to send, for sendFn
	sent    int
	errno   syscall.Errno
	sendFn  func(fd uintptr) bool
}

// udpGSOOff is set once a send with UDP_SEGMENT failed: the kernel or the egress device does not do it.
var udpGSOOff atomic.Bool

const (
	udpGSOMaxSegments = 64    // the kernel's UDP_MAX_SEGMENTS
	udpGSOMaxBytes    = 65000 // one GSO buffer must fit an IP datagram
)

var udpSegmentCmsgSpace = unix.CmsgSpace(2)

func newUDPWriter(pc *net.UDPConn, peer netip.AddrPort, maxDatagrams int) (*udpWriter, error) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &udpWriter{rc: rc, msgs: make([]unix.Mmsghdr, maxDatagrams), iovs: make([]unix.Iovec, maxDatagrams),
		oob: make([]byte, maxDatagrams*udpSegmentCmsgSpace)}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) { domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	port := portFromNet(peer.Port()) // the same swap both ways
	switch {
	case domain == unix.AF_INET && peer.Addr().Unmap().Is4():
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&w.name))
		sa4.Family, sa4.Port, sa4.Addr = unix.AF_INET, port, peer.Addr().Unmap().As4()
		w.nameLen = unix.SizeofSockaddrInet4
	case domain == unix.AF_INET6:
		w.name.Family, w.name.Port, w.name.Addr = unix.AF_INET6, port, peer.Addr().As16() // IPv4 as ::ffff:a.b.c.d
		w.nameLen = unix.SizeofSockaddrInet6
	default:
		return nil, errors.New("udpWriter: IPv6 peer on an IPv4 socket")
	}
	for i := range w.msgs {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&w.oob[i*udpSegmentCmsgSpace]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	w.sendFn = w.sendmmsg
	return w, nil
}

func (w *udpWriter) sendmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.msgs[w.sent])), uintptr(w.sendN-w.sent),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // the socket's buffer is full: wait for the poller
		case 0:
			w.sent += int(n)
			if w.sent < w.sendN {
				continue
			}
		}
		w.errno = e
		return true
	}
}

// Send sends datagrams (at most the writer's maxDatagrams).
func (w *udpWriter) Send(datagrams [][]byte) error {
	gso := !udpGSOOff.Load()
	err := w.send(datagrams, gso)
	if gso && err != nil && (errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT)) {
		udpGSOOff.Store(true)
		err = w.send(datagrams, false)
	}
	return err
}

func (w *udpWriter) send(datagrams [][]byte, gso bool) error {
	k := 0
	for i := 0; i < len(datagrams); {
		size, j, total := len(datagrams[i]), i+1, len(datagrams[i])
		for gso && j < len(datagrams) && j-i < udpGSOMaxSegments && len(datagrams[j]) <= size &&
			total+len(datagrams[j]) <= udpGSOMaxBytes {
			total += len(datagrams[j])
			j++
			if len(datagrams[j-1]) < size {
				break // only the last segment may be shorter
			}
		}
		for x := i; x < j; x++ {
			w.iovs[x].Base = unsafe.SliceData(datagrams[x])
			w.iovs[x].SetLen(len(datagrams[x]))
		}
		m := &w.msgs[k]
		m.Hdr.Name = (*byte)(unsafe.Pointer(&w.name))
		m.Hdr.Namelen = w.nameLen
		m.Hdr.Iov = &w.iovs[i]
		m.Hdr.SetIovlen(j - i)
		m.Hdr.Control, m.Hdr.Controllen = nil, 0
		if j-i > 1 {
			c := w.oob[k*udpSegmentCmsgSpace : (k+1)*udpSegmentCmsgSpace]
			*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(size)
			m.Hdr.Control = &c[0]
			m.Hdr.SetControllen(udpSegmentCmsgSpace)
		}
		k++
		i = j
	}
	w.sendN, w.sent, w.errno = k, 0, 0
	if err := w.rc.Write(w.sendFn); err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}

// reusePort puts a socket, before it is bound, into the SO_REUSEPORT group of its address (Listen).
var reusePort = func(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}
