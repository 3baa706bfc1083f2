package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
	"net/netip"
	"sync"
)

// ErrPoolExhausted is returned when every address of the pool is leased.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Pool leases IPv4 addresses of one network to sessions. The network address, the broadcast address and the
// server's own address (the first usable one, the gateway) are never leased. A user is offered the same address
// each time when it is free (ocserv's predictable-ips), by starting the search at a hash of the user name; the
// search walks a bitmap 64 addresses at a time, so a busy pool (or one user's many sessions) costs microseconds,
// not a walk over every lease.
type Pool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	size    uint32 // number of addresses in the prefix
	base    uint32 // the network address

	mu     sync.Mutex
	used   []uint64 // guarded by mu: bit i set = offset i leased or reserved (network, gateway, broadcast)
	leased int      // guarded by mu
}

// NewPool returns a pool over prefix (IPv4, at most /30).
func NewPool(prefix netip.Prefix) (*Pool, error) {
	prefix = prefix.Masked()
	if !prefix.Addr().Is4() || prefix.Bits() > 30 || prefix.Bits() < 8 {
		return nil, fmt.Errorf("address pool %s: need an IPv4 network between /8 and /30", prefix)
	}
	a4 := prefix.Addr().As4()
	p := &Pool{
		prefix:  prefix,
		gateway: prefix.Addr().Next(),
		size:    1 << (32 - prefix.Bits()),
		base:    binary.BigEndian.Uint32(a4[:]),
	}
	p.used = make([]uint64, (p.size+63)/64)
	for _, off := range []uint32{0, 1, p.size - 1} {
		p.used[off/64] |= 1 << (off % 64)
	}
	for off := p.size; off < uint32(len(p.used))*64; off++ { // a pool smaller than a word
		p.used[off/64] |= 1 << (off % 64)
	}
	return p, nil
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
	start := 2 + h.Sum32()%(p.size-3) // offsets 2 .. size-2
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.findFree(start)
	if !ok {
		return netip.Addr{}, ErrPoolExhausted
	}
	p.used[off/64] |= 1 << (off % 64)
	p.leased++
	return p.addr(off), nil
}

// findFree returns the first offset at or after start (wrapping around) whose bit is clear.
func (p *Pool) findFree(start uint32) (uint32, bool) {
	w := start / 64
	free := ^p.used[w] &^ (1<<(start%64) - 1) // the first word from start on
	for range len(p.used) + 1 {
		if free != 0 {
			return w*64 + uint32(bits.TrailingZeros64(free)), true
		}
		w = (w + 1) % uint32(len(p.used))
		free = ^p.used[w]
	}
	return 0, false
}

func (p *Pool) addr(off uint32) netip.Addr {
	v := p.base + off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// offset is a's place in the pool; ok=false outside it or for a reserved address.
func (p *Pool) offset(a netip.Addr) (uint32, bool) {
	if !a.Is4() || !p.prefix.Contains(a) {
		return 0, false
	}
	a4 := a.As4()
	off := binary.BigEndian.Uint32(a4[:]) - p.base
	return off, off >= 2 && off < p.size-1
}

// ErrAddressInUse is returned by AcquireAddr when the address is leased already.
var ErrAddressInUse = errors.New("the user's fixed address (explicit_ipv4) is in use by another session")

// AcquireAddr leases a specific address of the pool (explicit_ipv4).
func (p *Pool) AcquireAddr(a netip.Addr) error {
	off, ok := p.offset(a)
	if !ok {
		return fmt.Errorf("address %s is not a client address of the pool %s", a, p.prefix)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[off/64]&(1<<(off%64)) != 0 {
		return ErrAddressInUse
	}
	p.used[off/64] |= 1 << (off % 64)
	p.leased++
	return nil
}

// Release returns a leased address to the pool. Releasing an address that is not leased is a no-op.
func (p *Pool) Release(a netip.Addr) {
	off, ok := p.offset(a)
	if !ok {
		return
	}
	p.mu.Lock()
	if p.used[off/64]&(1<<(off%64)) != 0 {
		p.used[off/64] &^= 1 << (off % 64)
		p.leased--
	}
	p.mu.Unlock()
}

// Leased reports how many addresses are leased.
func (p *Pool) Leased() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leased
}
