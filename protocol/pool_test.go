package protocol

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestPoolNeverLeasesReservedAddresses(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("10.1.2.0/29")) // 8 addresses: .0 net, .1 gateway, .7 broadcast
	if err != nil {
		t.Fatal(err)
	}
	if p.Gateway() != netip.MustParseAddr("10.1.2.1") || p.Netmask() != netip.MustParseAddr("255.255.255.248") {
		t.Fatalf("gateway %s netmask %s", p.Gateway(), p.Netmask())
	}
	seen := map[netip.Addr]bool{}
	for i := range 5 {
		a, err := p.Acquire(fmt.Sprint("user", i))
		if err != nil {
			t.Fatalf("Acquire #%d: %v", i, err)
		}
		if seen[a] || !p.Prefix().Contains(a) {
			t.Fatalf("Acquire #%d = %s: duplicate or outside the pool", i, a)
		}
		switch a.String() {
		case "10.1.2.0", "10.1.2.1", "10.1.2.7":
			t.Fatalf("leased reserved address %s", a)
		}
		seen[a] = true
	}
	if _, err := p.Acquire("one-too-many"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Acquire on a full pool: %v, want ErrPoolExhausted", err)
	}
	for a := range seen {
		p.Release(a)
	}
	if p.Leased() != 0 {
		t.Fatalf("Leased() = %d after releasing all", p.Leased())
	}
}

func TestPoolPredictable(t *testing.T) {
	p, _ := NewPool(netip.MustParsePrefix("10.9.0.0/16"))
	a, _ := p.Acquire("alice")
	p.Release(a)
	b, _ := p.Acquire("alice")
	if a != b {
		t.Fatalf("alice got %s then %s; want the same address when it is free", a, b)
	}
	c, _ := p.Acquire("alice") // a second session of alice while the first holds the lease
	if c == b {
		t.Fatalf("two live leases share %s", c)
	}
}

func TestPoolRejectsBadPrefixes(t *testing.T) {
	for _, s := range []string{"10.0.0.0/31", "10.0.0.0/32", "fd00::/64", "10.0.0.0/7"} {
		if _, err := NewPool(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("NewPool(%s) succeeded", s)
		}
	}
}

func TestPool6(t *testing.T) {
	p, err := NewPool6(netip.MustParsePrefix("fd00:77::/64"), 128)
	if err != nil {
		t.Fatal(err)
	}
	if g := p.Gateway(); g != netip.MustParseAddr("fd00:77::1") {
		t.Fatalf("gateway %s", g)
	}
	a, _ := p.Acquire("alice")
	b, _ := p.Acquire("alice")
	if a == b || !p.Prefix().Contains(a) || a == p.Gateway() || a == p.Prefix().Addr() {
		t.Fatalf("leases %s %s", a, b)
	}
	p.Release(a)
	if c, _ := p.Acquire("alice"); c != a {
		t.Fatalf("alice got %s, then %s: not predictable", a, c)
	}
	// /64 client prefixes out of a /56: the client's address is ::1 of its own /64, never block 0 (the server's).
	q, _ := NewPool6(netip.MustParsePrefix("fd00:77::/56"), 64)
	seen := map[netip.Addr]bool{}
	for i := range 255 {
		a, err := q.Acquire(fmt.Sprint("u", i))
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		b := a.As16()
		if b[15] != 1 || netip.PrefixFrom(a, 64).Masked() == netip.MustParsePrefix("fd00:77::/64") || seen[a] {
			t.Fatalf("lease %s", a)
		}
		seen[a] = true
	}
	if _, err := q.Acquire("one too many"); err == nil {
		t.Fatal("a /56 gave more than 255 client /64s")
	}
}

// AcquirePrefix leases the block holding an assigned address or prefix, which Acquire then never gives out;
// assignments outside the pool, in the server's block or wider than a client prefix are refused.
func TestPool6AcquirePrefix(t *testing.T) {
	p, _ := NewPool6(netip.MustParsePrefix("fd00:77::/56"), 64)
	mp, ma := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		name, want, addr string // addr "": refused
	}{
		{"an address", "fd00:77:0:5::77/128", "fd00:77:0:5::77"},
		{"the same block again", "fd00:77:0:5::78/128", ""},
		{"a client prefix", "fd00:77:0:6::/64", "fd00:77:0:6::1"},
		{"a narrower prefix", "fd00:77:0:7::/80", "fd00:77:0:7::1"},
		{"wider than a client prefix", "fd00:77:0:8::/63", ""},
		{"the server's block", "fd00:77::77/128", ""},
		{"outside the pool", "fd00:78::77/128", ""},
		{"IPv4", "10.0.0.1/32", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := p.AcquirePrefix(mp(tc.want))
			if tc.addr == "" {
				if err == nil {
					t.Fatalf("AcquirePrefix(%s) = %s, want an error", tc.want, a)
				}
				return
			}
			if err != nil || a != ma(tc.addr) {
				t.Fatalf("AcquirePrefix(%s) = %s, %v; want %s", tc.want, a, err, tc.addr)
			}
		})
	}
	// 255 client blocks, 3 assigned: Acquire gives the other 252 and never one of those.
	for i := range 252 {
		a, err := p.Acquire(fmt.Sprint("u", i))
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		if b := a.As16(); b[7] >= 5 && b[7] <= 7 && b[6] == 0 {
			t.Fatalf("Acquire gave %s, inside an assigned block", a)
		}
	}
	if _, err := p.Acquire("one too many"); err == nil {
		t.Fatal("Acquire gave an assigned block")
	}
	p.Release(ma("fd00:77:0:5::77"))
	if a, err := p.AcquirePrefix(mp("fd00:77:0:5::99/128")); err != nil || a != ma("fd00:77:0:5::99") {
		t.Fatalf("after the release: %s, %v", a, err)
	}
	// /128 client prefixes: the address is the block.
	q, _ := NewPool6(netip.MustParsePrefix("fd00:77::/64"), 128)
	if a, err := q.AcquirePrefix(mp("fd00:77::77/128")); err != nil || a != ma("fd00:77::77") {
		t.Fatalf("/128 pool: %s, %v", a, err)
	}
	if _, err := q.AcquirePrefix(mp("fd00:77::1/128")); err == nil {
		t.Fatal("/128 pool: the gateway was leased")
	}
}

func TestNilPool6(t *testing.T) {
	var p *Pool6
	if p.Gateway().IsValid() || p.Prefix().IsValid() {
		t.Fatal("a nil IPv6 pool has addresses")
	}
}

// One user's sessions fill a /16 (the search wraps around the bitmap from the user's address), a /30 holds one
// client, and release/AcquireAddr keep the count right.
func TestPoolFillsAndWraps(t *testing.T) {
	p, _ := NewPool(netip.MustParsePrefix("10.9.0.0/16"))
	seen := make(map[netip.Addr]bool, 65533)
	for i := range 65533 {
		a, err := p.Acquire("bench")
		if err != nil {
			t.Fatalf("Acquire #%d: %v", i, err)
		}
		if seen[a] || a == p.Gateway() || a == netip.MustParseAddr("10.9.0.0") || a == netip.MustParseAddr("10.9.255.255") {
			t.Fatalf("Acquire #%d = %s: duplicate or reserved", i, a)
		}
		seen[a] = true
	}
	if _, err := p.Acquire("bench"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("full /16: %v", err)
	}
	x := netip.MustParseAddr("10.9.77.3")
	p.Release(x)
	p.Release(x) // twice: a no-op
	if p.Leased() != 65532 {
		t.Fatalf("Leased() = %d", p.Leased())
	}
	if err := p.AcquireAddr(x); err != nil || p.Leased() != 65533 {
		t.Fatalf("AcquireAddr(%s) = %v, Leased() = %d", x, err, p.Leased())
	}
	if err := p.AcquireAddr(x); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("AcquireAddr of a leased address: %v", err)
	}
	if err := p.AcquireAddr(p.Gateway()); err == nil {
		t.Fatal("AcquireAddr leased the gateway")
	}

	small, _ := NewPool(netip.MustParsePrefix("10.1.1.4/30"))
	if a, err := small.Acquire("x"); err != nil || a != netip.MustParseAddr("10.1.1.6") {
		t.Fatalf("/30: %s, %v; want 10.1.1.6", a, err)
	}
	if _, err := small.Acquire("y"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("/30 second lease: %v", err)
	}
}

func TestPool6AcquireAddr(t *testing.T) {
	tests := []struct {
		name, pool string
		sub        int
		addr       string
		ok         bool
	}{
		{"a client address of /128 prefixes", "fd00:9::/64", 128, "fd00:9::9", true},
		{"the server's own address", "fd00:9::/64", 128, "fd00:9::1", false},
		{"the network address", "fd00:9::/64", 128, "fd00:9::", false},
		{"outside the pool", "fd00:9::/64", 128, "fd00:8::9", false},
		{"the ::1 of a /96 client prefix", "fd00:9::/64", 96, "fd00:9::2:0:1", true},
		{"not the client address of its /96 prefix", "fd00:9::/64", 96, "fd00:9::2:0:2", false},
		{"the server's /96 prefix", "fd00:9::/64", 96, "fd00:9::1", false},
		{"a /80 client prefix in a /48", "fd00:9::/48", 80, "fd00:9:0:7:1::1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool6(netip.MustParsePrefix(tc.pool), tc.sub)
			if err != nil {
				t.Fatal(err)
			}
			a := netip.MustParseAddr(tc.addr)
			err = p.AcquireAddr(a)
			if (err == nil) != tc.ok {
				t.Fatalf("AcquireAddr(%s) = %v, want ok=%v", a, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if err := p.AcquireAddr(a); !errors.Is(err, ErrAddress6InUse) {
				t.Errorf("second AcquireAddr(%s) = %v, want ErrAddress6InUse", a, err)
			}
			p.Release(a)
			if err := p.AcquireAddr(a); err != nil {
				t.Errorf("AcquireAddr(%s) after Release = %v", a, err)
			}
		})
	}
}

// A per-user network becomes a pool at its first use, the same pool for the next session; a network the datapath
// was not started with is refused.
func TestPools(t *testing.T) {
	main, _ := NewPool(netip.MustParsePrefix("10.250.77.0/24"))
	user := netip.MustParsePrefix("10.9.0.0/24")
	user6 := netip.MustParsePrefix("fd00:9::/64")
	ps := newPools(main, nil, 128, []netip.Prefix{user, user6})
	if p, err := ps.pool4(netip.Prefix{}); p != main || err != nil {
		t.Errorf("pool4(none) = %v, %v", p, err)
	}
	p, err := ps.pool4(user)
	if err != nil || p.Gateway() != netip.MustParseAddr("10.9.0.1") {
		t.Fatalf("pool4(%s) = %v, %v", user, p, err)
	}
	if again, _ := ps.pool4(user); again != p {
		t.Error("a second session of the network got another pool")
	}
	if p6, err := ps.pool6(netip.Prefix{}); p6 != nil || err != nil {
		t.Errorf("pool6(none) without global IPv6 = %v, %v", p6, err)
	}
	if p6, err := ps.pool6(user6); err != nil || p6.Gateway() != netip.MustParseAddr("fd00:9::1") {
		t.Errorf("pool6(%s) = %v, %v", user6, p6, err)
	}
	if _, err := ps.pool4(netip.MustParsePrefix("10.8.0.0/24")); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("an unknown network: %v", err)
	}
}
