package secmod

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ocgate/auth"
)

func openTable(tb testing.TB, path string) *BanTable {
	tb.Helper()
	t, err := OpenBanTable(path, auth.BanConfig{MaxScore: 20, ResetTime: time.Hour, BanTime: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// TestBansThroughModule: points added through the module ban an address, which the network side's cached view
// then refuses without a call; the table survives a new worker on the same file; unban clears it in the module
// and the view; malformed ban requests are refused.
func TestBansThroughModule(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain := selfSigned(t, key)
	path := filepath.Join(t.TempDir(), "bans.json")
	a, other := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::1")
	now := time.Now()

	first := openTable(t, path)
	c, _, _ := startPair(t, &Secrets{Chain: chain, Key: key, Bans: first})
	b := NewBans(c)
	if b.Add(a, 10, now) || b.Add(other, 1, now) {
		t.Fatal("banned below max_ban_score")
	}
	if banned, _ := b.Banned(a, now); banned {
		t.Fatal("banned below max_ban_score")
	}
	if !b.Add(a, 10, now) {
		t.Fatal("not banned at max_ban_score")
	}
	if banned, first := b.Banned(a, now); !banned || !first {
		t.Fatalf("Banned = %v, %v; want true, true", banned, first)
	}
	if _, first := b.Banned(a, now); first {
		t.Fatal("the second refusal is reported as the first")
	}
	first.Close() // waits for the write

	// A new worker on the same file: the ban is there, and a fresh client's view has it.
	second := openTable(t, path)
	defer second.Close()
	c2, _, logs := startPair(t, &Secrets{Chain: chain, Key: key, Bans: second})
	b2 := NewBans(c2)
	if banned, _ := b2.Banned(a, now); !banned {
		t.Fatalf("the ban did not survive the worker: %+v", b2.List(now))
	}
	if l := b2.List(now); len(l) != 2 {
		t.Fatalf("List = %+v, want both addresses", l)
	}
	if !b2.Unban(a) {
		t.Fatal("Unban found no entry")
	}
	if banned, _ := b2.Banned(a, now); banned {
		t.Fatal("still banned after Unban")
	}
	if l := b2.List(now); len(l) != 1 || l[0].Addr != other {
		t.Fatalf("List after Unban = %+v", l)
	}

	for name, args := range map[string]any{
		"no adds":          banAddArgs{},
		"invalid address":  banAddArgs{Adds: []banAdd{{Points: 1}}},
		"negative points":  banAddArgs{Adds: []banAdd{{Addr: a, Points: -5}}},
		"too many at once": banAddArgs{Adds: make([]banAdd, maxBanAdds+1)},
		"unknown field":    map[string]any{"adds": []any{}, "reset": true},
	} {
		t.Run(name, func(t *testing.T) {
			var re *RemoteError
			err := c2.Call(t.Context(), opBanAdd, args, nil)
			if !errors.As(err, &re) || re.Code != codeMalformed {
				t.Fatalf("err = %v, want refused as malformed", err)
			}
		})
	}
	if !strings.Contains(logs.String(), "refused a malformed request") {
		t.Error("the refusals were not logged")
	}
}

// BenchmarkBanAdd is the cost the accept loop pays per connection for its ban points: in process, and through
// the module (a call over the socketpair, answered in this process).
func BenchmarkBanAdd(b *testing.B) {
	a := netip.MustParseAddr("192.0.2.7")
	b.Run("in-process", func(b *testing.B) {
		bans := auth.NewBans(auth.BanConfig{MaxScore: 1 << 30, ResetTime: time.Hour, BanTime: time.Hour})
		for b.Loop() {
			bans.Banned(a, time.Now())
			bans.Add(a, 1, time.Now())
		}
	})
	b.Run("security module", func(b *testing.B) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t, err := OpenBanTable(filepath.Join(b.TempDir(), "bans.json"), auth.BanConfig{MaxScore: 1 << 30,
			ResetTime: time.Hour, BanTime: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer t.Close()
		c, _, _ := startPair(b, &Secrets{Chain: selfSigned(b, key), Key: key, Bans: t})
		bans := NewBans(c)
		for b.Loop() {
			bans.Banned(a, time.Now())
			bans.Add(a, 1, time.Now())
		}
	})
}

// TestBanTableInMemory: a table without a file (no state directory) bans like one with a file, and closes.
func TestBanTableInMemory(t *testing.T) {
	tab := openTable(t, "")
	a := netip.MustParseAddr("192.0.2.7")
	r, err := tab.add(banAddArgs{Adds: []banAdd{{Addr: a, Points: 30}}})
	if err != nil || !r.(banAddResult).Banned[0] || tab.Bans().Until(a, time.Now()).IsZero() {
		t.Fatalf("add: %v %+v", err, r)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
}
