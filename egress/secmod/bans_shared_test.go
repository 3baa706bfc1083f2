package secmod

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"ocgate/auth"
	"ocgate/protocol/cluster/redistest"
)

// sharedBans runs a redis-server for the test and returns two instances' tables sharing it.
func sharedBans(t *testing.T, cfg auth.BanConfig) (a, b *BanTable) {
	t.Helper()
	url := redistest.Start(t)
	tables := make([]*BanTable, 2)
	for i := range tables {
		sb, err := OpenSharedBans(url, "", cfg, slog.Default())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Close() })
		tables[i], err = OpenBanTable("", cfg)
		if err != nil {
			t.Fatal(err)
		}
		tables[i].Share(sb)
	}
	return tables[0], tables[1]
}

// TestSharedBanFromLocalScore: an address the local table bans (its score holds points Redis never saw: counted
// while Redis was unreachable, or before Redis restarted empty) is banned in Redis too, so that the other
// instance refuses it; unban on the other instance lifts it everywhere.
func TestSharedBanFromLocalScore(t *testing.T) {
	cfg := auth.BanConfig{MaxScore: 20, ResetTime: time.Hour, BanTime: time.Hour}
	a, b := sharedBans(t, cfg)
	addr := netip.MustParseAddr("192.0.2.9")
	now := time.Now()
	a.bans.Add(addr, 15, now) // counted here alone
	res, err := a.add(banAddArgs{Adds: []banAdd{{Addr: addr, Points: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(banAddResult); !r.Banned[0] {
		t.Fatalf("the local score did not ban: %+v", r)
	}
	if b.Until(addr, time.Now()).IsZero() {
		t.Fatal("the other instance does not see the ban the local score decided")
	}
	if _, err := b.unban(banUnbanArgs{Addr: addr}); err != nil {
		t.Fatal(err)
	}
	if !b.Until(addr, time.Now()).IsZero() || !a.shared.until(addr, time.Now()).IsZero() {
		t.Fatal("unban on one instance left the shared ban")
	}
}
