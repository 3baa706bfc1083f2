package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sync"
)

// ErrPoolExhausted is returned when every address of the pool is leased.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Pool leases IPv4 addresses of one network to sessions. The network address, the broadcast address and the
// server's own address (the first usable one, the gateway) are never leased. A user is offered the same address
// each time when it is free (ocserv's predictable-ips), by starting the search at a hash of the user name.
type Pool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	size    uint32 // number of addresses in the prefix

	mu     sync.Mutex
	leased map[netip.Addr]struct{} // guarded by mu
}

// NewPool returns a pool over prefix (IPv4, at most /30).
func NewPool(prefix netip.Prefix) (*Pool, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() || prefix.Bits() > 30 || prefix.Bits() < 8 {
		return nil, fmt.Errorf("address pool %s: need an IPv4 network between /8 and /30", prefix)
	}
	return &Pool{
		prefix:  prefix,
		gateway: prefix.Addr().Next(),
		size:    1 << (32 - prefix.Bits()),
		leased:  make(map[netip.Addr]struct{}),
	}, nil
}

// Gateway is the server's own address inside the pool.
func (p *Pool) Gateway() netip.Addr { return p.gateway }

// Prefix is the pool's network.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Netmask is the pool's netmask in dotted form.
func (p *Pool) Netmask() netip.Addr {
	m := ^uint32(0) << (32 - p.prefix.Bits())
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// Acquire leases a free address, preferring the one tied to user.
func (p *Pool) Acquire(user string) (netip.Addr, error) {
	h := fnv.New32a()
	h.Write([]byte(user))
	usable := p.size - 3 // minus network, gateway, broadcast
	start := h.Sum32() % usable
	a4 := p.prefix.Addr().As4()
	base := binary.BigEndian.Uint32(a4[:])

	p.mu.Lock()
	defer p.mu.Unlock()
	for i := uint32(0); i < usable; i++ {
		off := 2 + (start+i)%usable // offsets 2 .. size-2
		v := base + off
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if _, taken := p.leased[a]; !taken {
			p.leased[a] = struct{}{}
			return a, nil
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

// ErrAddressInUse is returned by AcquireAddr when the address is leased already.
var ErrAddressInUse = errors.New("the user's fixed address (explicit_ipv4) is in use by another session")

// AcquireAddr leases a specific address of the pool (explicit_ipv4).
func (p *Pool) AcquireAddr(a netip.Addr) error {
	if !p.prefix.Contains(a) || a == p.gateway || a == p.prefix.Addr() {
		return fmt.Errorf("address %s is not a client address of the pool %s", a, p.prefix)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, taken := p.leased[a]; taken {
		return ErrAddressInUse
	}
	p.leased[a] = struct{}{}
	return nil
}

// Release returns a leased address to the pool. Releasing an address that is not leased is a no-op.
func (p *Pool) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.leased, a)
	p.mu.Unlock()
}

// Leased reports how many addresses are leased.
func (p *Pool) Leased() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.leased)
}
