package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"ocgate/protocol/cluster/redistest"
)

func open(t *testing.T, url, inst string, o Options) *Store {
	t.Helper()
	o.URL, o.Instance = url, inst
	if o.TTL == 0 {
		o.TTL = time.Minute
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLeaseFencing(t *testing.T) {
	url := redistest.Start(t)
	a := open(t, url, "a", Options{})
	b := open(t, url, "b", Options{})
	ip := netip.MustParseAddr("10.9.0.5")
	if err := a.Lease(ip, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lease(ip, "s2"); err != ErrLeased {
		t.Fatalf("a second session got a leased address: %v", err)
	}
	if err := b.Lease(ip, "s1"); err != nil {
		t.Fatalf("the same session (a roam) could not take its lease over: %v", err)
	}
	b.Release("s2", ip) // not its lease: no effect
	if err := a.Lease(ip, "s3"); err != ErrLeased {
		t.Fatalf("release by a non-holder freed the lease: %v", err)
	}
	b.Release("s1", ip)
	if err := a.Lease(ip, "s3"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestTakeAndRevoke(t *testing.T) {
	url := redistest.Start(t)
	var mu sync.Mutex
	var taken []string
	got := make(chan struct{}, 1)
	a := open(t, url, "a", Options{OnTakeover: func(sid, by string) {
		mu.Lock()
		taken = append(taken, sid+"@"+by)
		mu.Unlock()
		got <- struct{}{}
	}})
	a.Start()
	b := open(t, url, "b", Options{})
	rec := Record{SID: "s1", User: "alice", Groups: []string{"g1", "g2"}, IPv4: netip.MustParseAddr("10.9.0.7"), Created: time.Now()}
	if err := a.Create(rec); err != nil {
		t.Fatal(err)
	}
	// The subscription is asynchronous: wait until a has subscribed before b publishes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := b.rdb.PubSubNumSub(t.Context(), takeoverChan("a")).Result()
		if n[takeoverChan("a")] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance a did not subscribe")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, prev, err := b.Take("s1", "192.0.2.1:443")
	if err != nil {
		t.Fatal(err)
	}
	if prev != "a" || r.Instance != "b" || r.User != "alice" || r.IPv4 != rec.IPv4 || !slices.Equal(r.Groups, rec.Groups) {
		t.Fatalf("record after take: %+v", r)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the old owner got no takeover message")
	}
	mu.Lock()
	if !slices.Equal(taken, []string{"s1@b"}) {
		t.Fatalf("takeover messages %v", taken)
	}
	mu.Unlock()
	if ok, err := a.Revoke("s1", "alice", rec.IPv4); ok || err != nil {
		t.Fatalf("the old owner revoked a session taken over: %v, %v", ok, err)
	}
	if ok, err := b.Revoke("s1", "alice", rec.IPv4); !ok || err != nil {
		t.Fatalf("revoke: %v, %v", ok, err)
	}
	if _, _, err := a.Take("s1", ""); err != ErrRevoked {
		t.Fatalf("take of a revoked session: %v", err)
	}
	if _, _, err := a.Take("never", ""); err != ErrRevoked {
		t.Fatalf("take of an unknown session: %v", err)
	}
	all, err := a.All()
	if err != nil || len(all) != 0 {
		t.Fatalf("All after revoke: %v, %v", all, err)
	}
}

func TestAdmitAcrossInstances(t *testing.T) {
	url := redistest.Start(t)
	a := open(t, url, "a", Options{})
	b := open(t, url, "b", Options{})
	for _, tc := range []struct {
		s    *Store
		sid  string
		want bool
	}{{a, "s1", true}, {b, "s2", true}, {b, "s3", false}, {a, "s1", true}} {
		ok, err := tc.s.Admit("bob", tc.sid, 2)
		if err != nil || ok != tc.want {
			t.Fatalf("admit %s: %v, %v; want %v", tc.sid, ok, err, tc.want)
		}
	}
	a.Revoke("s1", "bob") // no record: nobody owns it, so a revokes
	if ok, _ := b.Admit("bob", "s3", 2); !ok {
		t.Fatal("a revoked session still counted")
	}
}

func TestRenewConflictAndDegradation(t *testing.T) {
	url := redistest.Start(t)
	ip := netip.MustParseAddr("10.9.0.9")
	var owned []Owned
	a := open(t, url, "a", Options{Owned: func() []Owned { return owned }})
	b := open(t, url, "b", Options{})
	// a created s1 while Redis was unreachable ("local"): reconcile publishes it, but b holds its address.
	if err := b.Lease(ip, "s2"); err != nil {
		t.Fatal(err)
	}
	owned = []Owned{{Addrs: []netip.Addr{ip}, Rec: Record{SID: "s1", User: "u", IPv4: ip, Created: time.Now()}}}
	conflicts, err := a.RenewNow()
	if err != nil || !slices.Equal(conflicts, []string{"s1"}) {
		t.Fatalf("conflicts %v, %v", conflicts, err)
	}
	owned = []Owned{{Rec: Record{SID: "s3", User: "u", Created: time.Now()}, Admitted: true}}
	if conflicts, err := a.RenewNow(); err != nil || len(conflicts) != 0 {
		t.Fatalf("no conflict expected: %v, %v", conflicts, err)
	}
	// Redis lost everything (a restart without persistence): renewal publishes the session again.
	if err := a.rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if conflicts, err := a.RenewNow(); err != nil || len(conflicts) != 0 {
		t.Fatalf("after a flush: %v, %v", conflicts, err)
	}
	if all, _ := b.All(); len(all) != 1 || all[0].SID != "s3" || all[0].Instance != "a" {
		t.Fatalf("after a flush and a renewal, Redis holds %+v", all)
	}
	if ok, _ := b.Admit("u", "s4", 1); ok {
		t.Fatal("max_same_clients: the renewed session was not counted again")
	}
	// A revoked session is not brought back: the local one ends.
	a.Revoke("s3", "u")
	if conflicts, _ := a.RenewNow(); len(conflicts) != 1 {
		t.Fatalf("a revoked session renewed: %v", conflicts)
	}

	dead := open(t, "redis://127.0.0.1:1/0", "c", Options{})
	if dead.Healthy() {
		t.Fatal("a store without Redis says it is healthy")
	}
	if err := dead.Lease(ip, "s9"); err == nil {
		t.Fatal("a lease without Redis succeeded")
	}
}

// TestRenewOlderSessionKeepsLease: two instances gave one address while Redis was unreachable; when it returns,
// whichever renews first, the older session keeps the address and the newer one's renewal reports the conflict.
func TestRenewOlderSessionKeepsLease(t *testing.T) {
	ip := netip.MustParseAddr("10.9.0.11")
	older := Owned{Rec: Record{SID: "old", User: "u", IPv4: ip, Created: time.Now().Add(-time.Minute)}, Addrs: []netip.Addr{ip}}
	newer := Owned{Rec: Record{SID: "new", User: "u", IPv4: ip, Created: time.Now()}, Addrs: []netip.Addr{ip}}
	for _, newerFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("newer first %v", newerFirst), func(t *testing.T) {
			url := redistest.Start(t)
			a := open(t, url, "a", Options{Owned: func() []Owned { return []Owned{older} }})
			b := open(t, url, "b", Options{Owned: func() []Owned { return []Owned{newer} }})
			first, second := a, b
			if newerFirst {
				first, second = b, a
			}
			first.RenewNow()
			second.RenewNow()
			if c, err := a.RenewNow(); err != nil || len(c) != 0 {
				t.Fatalf("the older session lost its address: %v, %v", c, err)
			}
			if c, err := b.RenewNow(); err != nil || !slices.Equal(c, []string{"new"}) {
				t.Fatalf("the newer session's conflict: %v, %v", c, err)
			}
		})
	}
}
