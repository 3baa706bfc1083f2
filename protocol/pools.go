package protocol

import (
	"fmt"
	"net/netip"
	"sync"
)

// pools are the server's address pools: the global ones (ipv4_network, ipv6_network) and one per distinct network
// that per-user and per-group files name, created at the first session that needs it. The datapath serves a
// fixed set of networks (its gateways and client addresses), so a network outside that set, named by a file
// edited after the start, refuses the session until the server restarts.
type pools struct {
	main  *Pool
	main6 *Pool6 // nil: no global IPv6
	sub6  int    // ipv6_subnet_prefix, for the IPv6 pools of per-user files
	known []netip.Prefix

	mu sync.Mutex
	v4 map[netip.Prefix]*Pool  // guarded by mu
	v6 map[netip.Prefix]*Pool6 // guarded by mu
}

func newPools(main *Pool, main6 *Pool6, sub6 int, known []netip.Prefix) *pools {
	return &pools{main: main, main6: main6, sub6: sub6, known: known,
		v4: map[netip.Prefix]*Pool{}, v6: map[netip.Prefix]*Pool6{}}
}

// pool4 returns the pool of network n (the global one when n is invalid or its network).
func (ps *pools) pool4(n netip.Prefix) (*Pool, error) {
	if !n.IsValid() || n == ps.main.Prefix() {
		return ps.main, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.v4[n]; p != nil {
		return p, nil
	}
	if err := ps.knownLocked(n); err != nil {
		return nil, err
	}
	p, err := NewPool(n)
	if err != nil {
		return nil, err
	}
	ps.v4[n] = p
	return p, nil
}

// pool6 returns the IPv6 pool of network n (the global one, possibly nil, when n is invalid or its network).
func (ps *pools) pool6(n netip.Prefix) (*Pool6, error) {
	if !n.IsValid() || n == ps.main6.Prefix() {
		return ps.main6, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.v6[n]; p != nil {
		return p, nil
	}
	if err := ps.knownLocked(n); err != nil {
		return nil, err
	}
	p, err := NewPool6(n, ps.sub6)
	if err != nil {
		return nil, err
	}
	ps.v6[n] = p
	return p, nil
}

// knownLocked refuses a network the datapath does not serve. ps.mu must be held.
func (ps *pools) knownLocked(n netip.Prefix) error {
	for _, k := range ps.known {
		if k == n {
			return nil
		}
	}
	return fmt.Errorf("address pool %s (a per-user or per-group ipv4_network/ipv6_network) was not in the "+
		"configuration when the server started; restart ocgate to serve it", n)
}
