package auth

import (
	"net/netip"
	"testing"
	"time"
)

func TestBans(t *testing.T) {
	b := NewBans(BanConfig{MaxScore: 20, ResetTime: time.Minute, BanTime: 10 * time.Second})
	a, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	t0 := time.Unix(1000, 0)
	if b.Add(a, 10, t0) {
		t.Fatal("banned at 10 points")
	}
	if !b.Add(a, 10, t0.Add(time.Second)) {
		t.Fatal("not banned at 20 points")
	}
	if banned, first := b.Banned(a, t0.Add(2*time.Second)); !banned || !first {
		t.Fatalf("Banned = %v, %v; want banned, first notice", banned, first)
	}
	if _, first := b.Banned(a, t0.Add(3*time.Second)); first {
		t.Fatal("the ban was noticed twice")
	}
	if banned, _ := b.Banned(other, t0.Add(2*time.Second)); banned {
		t.Fatal("another address is banned")
	}
	if banned, _ := b.Banned(a, t0.Add(12*time.Second)); banned {
		t.Fatal("still banned after ban time")
	}
	b.Add(other, 10, t0)
	if b.Add(other, 10, t0.Add(2*time.Minute)) {
		t.Fatal("score not reset after reset time")
	}
	if len(b.List(t0.Add(2*time.Minute))) != 1 {
		t.Fatalf("List: %+v", b.List(t0.Add(2*time.Minute)))
	}
	disabled := NewBans(BanConfig{})
	disabled.Add(a, 1000, t0)
	if banned, _ := disabled.Banned(a, t0); banned {
		t.Fatal("bans disabled but banned")
	}
}
