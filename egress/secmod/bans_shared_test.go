package secmod

import (
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ocgate/auth"
)

// sharedBans runs a redis-server on a unix socket for the test and returns two instances' tables sharing it. A
// machine without redis-server fails the test (integration/test.sh installs it).
func sharedBans(t *testing.T, cfg auth.BanConfig) (a, b *BanTable) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is needed (Debian package redis-server; integration/test.sh installs it)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tables := make([]*BanTable, 2)
	for i := range tables {
		sb, err := OpenSharedBans("unix://"+sock, "", cfg, slog.Default())
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
	deadline := time.Now().Add(10 * time.Second)
	for tables[0].shared.rdb.Ping(t.Context()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling for the server's socket, bounded by the deadline
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
