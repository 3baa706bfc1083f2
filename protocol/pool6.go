package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sync"
)

// Pool6 leases IPv6 client prefixes of ipv6_subnet_prefix bits out of ipv6_network, as ocserv does. Block 0 is
// the server's (its address, the network's ::1, is the gateway; with /128 client prefixes that address is block
// 1, which is reserved too). A client's address is its block's first address, or the block's ::1 when the block
// is wider than one address (::0 of a subnet is the subnet-router anycast address). Like Pool, a user gets the
// same prefix each time when it is free.
type Pool6 struct {
	prefix   netip.Prefix
	sub      int    // client prefix length
	blocks   uint64 // blocks considered: at most 2^32
	reserved uint64 // leading blocks never leased

	mu     sync.Mutex
	leased map[netip.Addr]struct{} // guarded by mu
}

// maxPool6Probes bounds the search for a free block (a pool of 2^32 blocks is never scanned whole).
const maxPool6Probes = 1 << 16

// NewPool6 returns a pool of /sub client prefixes out of prefix.
func NewPool6(prefix netip.Prefix, sub int) (*Pool6, error) {
	if !prefix.Addr().Is6() || sub <= prefix.Bits() || sub > 128 {
		return nil, fmt.Errorf("IPv6 pool %s with client prefix /%d: want an IPv6 network and a longer client prefix", prefix, sub)
	}
	p := &Pool6{prefix: prefix.Masked(), sub: sub, blocks: 1 << min(sub-prefix.Bits(), 32), reserved: 1,
		leased: make(map[netip.Addr]struct{})}
	if sub == 128 {
		p.reserved = 2
	}
	if p.blocks <= p.reserved {
		return nil, fmt.Errorf("IPv6 pool %s with client prefix /%d holds no client prefix", prefix, sub)
	}
	return p, nil
}

// Prefix is the pool's network (the zero Prefix for a nil pool: no IPv6); SubnetBits the length of each
// client's prefix.
func (p *Pool6) Prefix() netip.Prefix {
	if p == nil {
		return netip.Prefix{}
	}
	return p.prefix
}
func (p *Pool6) SubnetBits() int {
	if p == nil {
		return 0
	}
	return p.sub
}

// Gateway is the server's own address inside the pool (the zero Addr for a nil pool).
func (p *Pool6) Gateway() netip.Addr {
	if p == nil {
		return netip.Addr{}
	}
	return add128(p.prefix.Addr(), 0, 1)
}

// block returns the client address of block i.
func (p *Pool6) block(i uint64) netip.Addr {
	shift := uint(128 - p.sub)
	var hi, lo uint64
	switch {
	case shift >= 64:
		hi = i << (shift - 64)
	case shift == 0:
		lo = i
	default:
		hi, lo = i>>(64-shift), i<<shift
	}
	a := add128(p.prefix.Addr(), hi, lo)
	if p.sub < 128 {
		a = add128(a, 0, 1)
	}
	return a
}

func add128(a netip.Addr, hi, lo uint64) netip.Addr {
	b := a.As16()
	h, l := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	nl := l + lo
	if nl < l {
		h++
	}
	binary.BigEndian.PutUint64(b[:8], h+hi)
	binary.BigEndian.PutUint64(b[8:], nl)
	return netip.AddrFrom16(b)
}

// ErrPool6Exhausted is returned when no free client prefix was found.
var ErrPool6Exhausted = errors.New("no free IPv6 prefix in the pool")

// Acquire leases a client prefix, preferring the one tied to user, and returns the client's address.
func (p *Pool6) Acquire(user string) (netip.Addr, error) {
	h := fnv.New64a()
	h.Write([]byte(user))
	usable := p.blocks - p.reserved
	start := h.Sum64() % usable
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := uint64(0); i < min(usable, maxPool6Probes); i++ {
		a := p.block(p.reserved + (start+i)%usable)
		if _, taken := p.leased[a]; !taken {
			p.leased[a] = struct{}{}
			return a, nil
		}
	}
	return netip.Addr{}, ErrPool6Exhausted
}

// ErrAddress6InUse is returned by AcquireAddr when the address is leased already.
var ErrAddress6InUse = errors.New("the fixed IPv6 address is in use by another session")

// AcquireAddr leases the client prefix whose client address is a (explicit_ipv6): a's block must be one Acquire
// could hand out, and a that block's client address.
func (p *Pool6) AcquireAddr(a netip.Addr) error {
	if !p.prefix.Contains(a) {
		return fmt.Errorf("address %s is outside the IPv6 pool %s", a, p.prefix)
	}
	b, n := a.As16(), p.prefix.Addr().As16()
	hi := binary.BigEndian.Uint64(b[:8]) - binary.BigEndian.Uint64(n[:8]) // a is inside: no borrow beyond lo
	lo := binary.BigEndian.Uint64(b[8:]) - binary.BigEndian.Uint64(n[8:])
	if lo > binary.BigEndian.Uint64(b[8:]) {
		hi--
	}
	var i uint64 // (hi:lo) >> (128-sub), which is below 2^(sub-bits)
	switch shift := uint(128 - p.sub); {
	case shift >= 64:
		i = hi >> (shift - 64)
	case shift == 0:
		i = lo
	default:
		i = hi<<(64-shift) | lo>>shift
	}
	if i < p.reserved || i >= p.blocks || p.block(i) != a {
		return fmt.Errorf("address %s is not a client address of the IPv6 pool %s (client prefixes /%d)", a, p.prefix, p.sub)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, taken := p.leased[a]; taken {
		return ErrAddress6InUse
	}
	p.leased[a] = struct{}{}
	return nil
}

// Release returns a leased address's prefix to the pool.
func (p *Pool6) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.leased, a)
	p.mu.Unlock()
}
