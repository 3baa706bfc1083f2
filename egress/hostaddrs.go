package egress

// The host's own addresses. A flow that the netstack re-originates from the server's own sockets towards an
// address of the server's host arrives on the host's loopback interface, which host firewalls accept wholesale:
// a VPN user would reach every service of the host that its INPUT rules keep from its own network (and the
// server's own listeners, the SOCKS5 ingress among them). So the addresses configured on the host's interfaces,
// and the directed broadcast addresses of its IPv4 subnets (which would leave as link-layer broadcasts), are
// special-purpose destinations like loopback: refused unless egress_allow names them.
//
// The set follows the interfaces as they change: on Linux a netlink subscription to address changes triggers a
// re-read (hostaddrs_linux.go), and every refreshEvery the set is read again anyway.

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const refreshEvery = 30 * time.Second

// HostAddrs is the live set of the host's own addresses. Its zero value holds none; NewHostAddrs fills it and
// keeps it up to date until Close.
type HostAddrs struct {
	set  atomic.Pointer[map[netip.Addr]struct{}]
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	// list returns the host's interface addresses; nil means the real ones (tests replace it).
	list func() ([]netip.Prefix, error)
}

// NewHostAddrs reads the host's addresses and watches them until Close.
func NewHostAddrs() *HostAddrs {
	h := &HostAddrs{stop: make(chan struct{})}
	h.refresh()
	changed := make(chan struct{}, 1)
	watchAddrs(h.stop, changed, &h.wg)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(refreshEvery)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			case <-changed:
			}
			h.refresh()
		}
	}()
	return h
}

// StaticHostAddrs is a fixed set of host addresses (with their subnets, for the directed broadcasts), for tests
// and for hosts whose addresses never change.
func StaticHostAddrs(ps ...netip.Prefix) *HostAddrs {
	h := &HostAddrs{list: func() ([]netip.Prefix, error) { return ps, nil }}
	h.refresh()
	return h
}

// Close stops watching. Idempotent.
func (h *HostAddrs) Close() {
	if h == nil || h.stop == nil {
		return
	}
	h.once.Do(func() { close(h.stop) })
	h.wg.Wait()
}

// Contains reports whether a is one of the host's addresses or the directed broadcast address of one of its IPv4
// subnets. It does not allocate.
func (h *HostAddrs) Contains(a netip.Addr) bool {
	if h == nil {
		return false
	}
	m := h.set.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[a]
	return ok
}

// refresh reads the interfaces' addresses again. On an error the previous set stays.
func (h *HostAddrs) refresh() {
	list := h.list
	if list == nil {
		list = interfacePrefixes
	}
	ps, err := list()
	if err != nil {
		return
	}
	m := make(map[netip.Addr]struct{}, 2*len(ps))
	for _, p := range ps {
		a := p.Addr().Unmap()
		m[a] = struct{}{}
		if a.Is4() && p.Bits() < 31 {
			m[lastAddr(p)] = struct{}{}
		}
	}
	h.set.Store(&m)
}

// lastAddr is the last address of an IPv4 prefix: its directed broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// interfacePrefixes lists the addresses of every interface of the host, with their prefix lengths.
func interfacePrefixes() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		ip = ip.Unmap()
		if ip.Is4() && ones > 32 {
			ones -= 96
		}
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}
