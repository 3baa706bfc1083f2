package protocol

import (
	"encoding/binary"
	"net"
	"net/netip"
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
