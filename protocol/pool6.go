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
	leased map[netip.Addr]struct{}   // guarded by mu: by block address (block(i))
	fixed  map[netip.Addr]netip.Addr // guarded by mu: AcquirePrefix's client address → its block's address
}

// maxPool6Probes bounds the search for a free block (a pool of 2^32 blocks is never scanned whole).
const maxPool6Probes = 1 << 16

// NewPool6 returns a pool of /sub client prefixes out of prefix.
func NewPool6(prefix netip.Prefix, sub int) (*Pool6, error) {
	if !prefix.Addr().Is6() || sub <= prefix.Bits() || sub > 128 {
		return nil, fmt.Errorf("IPv6 pool %s with client prefix /%d: want an IPv6 network and a longer client prefix", prefix, sub)
	}
	p := &Pool6{prefix: prefix.Masked(), sub: sub, blocks: 1 << min(sub-prefix.Bits(), 32), reserved: 1,
		leased: make(map[netip.Addr]struct{}), fixed: make(map[netip.Addr]netip.Addr)}
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

// blockIndex is the number of the block holding a; ok=false outside the blocks the pool considers.
func (p *Pool6) blockIndex(a netip.Addr) (i uint64, ok bool) {
	if !a.Is6() || !p.prefix.Contains(a) {
		return 0, false
	}
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	switch shift := uint(128 - p.sub); {
	case shift >= 64:
		i = hi >> (shift - 64)
	case shift == 0:
		i = lo
	default:
		i = hi<<(64-shift) | lo>>shift
	}
	i &= p.blocks - 1
	// The bits above the considered blocks must be zero: the block computed back holds a.
	return i, netip.PrefixFrom(p.block(i), p.sub).Masked() == netip.PrefixFrom(a, p.sub).Masked()
}

// AcquirePrefix leases the client prefix an authentication server assigned (RADIUS Framed-IPv6-Address, a /128,
// or Framed-IPv6-Prefix): the whole block holding it, so no other client is given an overlapping prefix. The
// client's address is the assigned one for a single address, else its block's (as Acquire gives); the client is
// told the pool's client prefix length like every other. An assignment outside the pool, in the server's block,
// or wider than a client prefix is refused.
func (p *Pool6) AcquirePrefix(want netip.Prefix) (netip.Addr, error) {
	i, ok := p.blockIndex(want.Addr())
	if !ok || want.Bits() < p.sub || i < p.reserved {
		return netip.Addr{}, fmt.Errorf("IPv6 prefix %s is not inside one client prefix (/%d) of the pool %s", want, p.sub, p.prefix)
	}
	key, a := p.block(i), p.block(i)
	if want.Bits() == 128 {
		a = want.Addr()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, taken := p.leased[key]; taken {
		return netip.Addr{}, fmt.Errorf("the assigned IPv6 prefix %s is in use by another session", want)
	}
	p.leased[key] = struct{}{}
	if a != key {
		p.fixed[a] = key
	}
	return a, nil
}

// ErrAddress6InUse is returned by AcquireAddr when the address is leased already.
var ErrAddress6InUse = errors.New("the fixed IPv6 address is in use by another session")

// AcquireAddr leases the client prefix whose client address is a (explicit_ipv6): a's block must be one Acquire
// could hand out, and a that block's client address.
func (p *Pool6) AcquireAddr(a netip.Addr) error {
	if !a.Is6() || !p.prefix.Contains(a) {
		return fmt.Errorf("address %s is outside the IPv6 pool %s", a, p.prefix)
	}
	if i, ok := p.blockIndex(a); !ok || i < p.reserved || p.block(i) != a {
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
	if key, ok := p.fixed[a]; ok {
		delete(p.fixed, a)
		a = key
	}
	delete(p.leased, a)
	p.mu.Unlock()
}
