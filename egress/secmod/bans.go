package secmod

// Ban points in the module. The worker holds the table (BanTable: an auth.Bans written to a file it opened before
// dropping privileges, so that the table survives a worker restart); the network process holds Bans, the
// protocol's ban store, which adds points and lists and unbans through the module, and keeps a cached view of the
// banned addresses from the module's answers:
//
//	accept ──► Bans.Banned: the cached view, no call ──► Bans.Add: op ban.add (one call per connection, ~40 µs;
//	           the module answers with the address's ban, which refreshes the view)
//	ctl    ──► Bans.List / Bans.Unban: op ban.list / ban.unban (the view follows)
//
// The accept loop never waits for a worker: while none serves, points are kept here (at most maxPendingBans
// addresses) and sent with the next add. Code in the network process cannot clear a score or a ban it does not
// like except through ban.unban, which is what `occtl unban ip` calls — the module logs each one.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"ocgate/auth"
)

// Ban operations.
const (
	opBanAdd   = "ban.add"
	opBanList  = "ban.list"
	opBanUnban = "ban.unban"
)

const (
	maxBanAdds     = 256 // points for at most this many addresses in one ban.add
	maxPendingBans = 4096
	banCallTimeout = time.Second
)

type banAdd struct {
	Addr   netip.Addr `json:"addr"`
	Points int        `json:"points"`
}

type banAddArgs struct {
	Adds []banAdd `json:"adds"`
}

// banAddResult answers each add in order: whether it banned the address, and until when the address is banned
// (zero: it is not).
type banAddResult struct {
	Banned []bool      `json:"banned"`
	Until  []time.Time `json:"until"`
}

type banUnbanArgs struct {
	Addr netip.Addr `json:"addr"`
}

type banUnbanResult struct {
	Found bool `json:"found"`
}

// BanTable is the worker's ban table, written to a file after each change (in the background, coalesced: a
// worker killed within a write of an add loses that add).
type BanTable struct {
	bans   *auth.Bans
	f      *os.File
	log    *slog.Logger
	shared *SharedBans // nil: the points are this instance's only (bans_shared.go)

	wg      sync.WaitGroup // the writer
	mu      sync.Mutex
	dirty   bool // guarded by mu: changed since the write in progress began
	writing bool // guarded by mu
}

// OpenBanTable opens (or creates, 0600) the table's file at path and reads the entries it holds. Call it from the
// Loader, before the worker drops privileges: the worker keeps the descriptor. With path "", the table is kept in
// memory only: a worker restart forgets it.
func OpenBanTable(path string, cfg auth.BanConfig) (*BanTable, error) {
	if path == "" {
		return &BanTable{bans: auth.NewBans(cfg), log: slog.Default()}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the ban table: %w", err)
	}
	t := &BanTable{bans: auth.NewBans(cfg), f: f, log: slog.Default()}
	var recs []auth.BanRecord
	// A write is the table then a truncation to its length: a worker killed in between leaves the new table and
	// the tail of the old one, which the decoder, reading one value, ignores.
	if err := json.NewDecoder(f).Decode(&recs); err != nil && !errors.Is(err, io.EOF) {
		t.log.Warn("security module: the ban table's file does not decode; starting empty", "path", path, "err", err)
	}
	t.bans.Import(recs)
	return t, nil
}

// Bans returns the table.
func (t *BanTable) Bans() *auth.Bans { return t.bans }

// Share keeps the points in Redis as well (redis_url): every instance sharing it sees them.
func (t *BanTable) Share(s *SharedBans) { t.shared = s }

// Until returns when a's ban ends (zero: not banned), here or, shared, on any instance.
func (t *BanTable) Until(a netip.Addr, now time.Time) time.Time {
	u := t.bans.Until(a, now)
	if t.shared != nil && u.IsZero() {
		u = t.shared.until(a, now)
	}
	return u
}

// changed schedules a write of the table.
func (t *BanTable) changed() {
	if t.f == nil {
		return // in memory only
	}
	t.mu.Lock()
	t.dirty = true
	if t.writing {
		t.mu.Unlock()
		return
	}
	t.writing = true
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		for {
			t.mu.Lock()
			if !t.dirty {
				t.writing = false
				t.mu.Unlock()
				return
			}
			t.dirty = false
			t.mu.Unlock()
			if err := t.write(); err != nil {
				t.log.Warn("security module: writing the ban table", "err", err)
			}
		}
	}()
}

// Close waits for the write in progress and closes the file.
func (t *BanTable) Close() error {
	t.wg.Wait()
	if t.f == nil {
		return nil
	}
	return t.f.Close()
}

func (t *BanTable) write() error {
	b, err := json.Marshal(t.bans.Export(time.Now()))
	if err != nil {
		return err
	}
	if _, err := t.f.WriteAt(b, 0); err != nil {
		return err
	}
	return t.f.Truncate(int64(len(b)))
}

func (t *BanTable) add(a banAddArgs) (any, error) {
	if len(a.Adds) == 0 || len(a.Adds) > maxBanAdds {
		return nil, fmt.Errorf("%w: %d adds", errMalformed, len(a.Adds))
	}
	now := time.Now()
	res := banAddResult{Banned: make([]bool, len(a.Adds)), Until: make([]time.Time, len(a.Adds))}
	for i, ad := range a.Adds {
		if !ad.Addr.IsValid() || ad.Points < 0 || ad.Points > 1<<20 {
			return nil, fmt.Errorf("%w: add %d points to %v", errMalformed, ad.Points, ad.Addr)
		}
		res.Banned[i] = t.bans.Add(ad.Addr, ad.Points, now)
		res.Until[i] = t.bans.Until(ad.Addr, now)
		if t.shared != nil {
			// The local table counts too: it decides alone while Redis does not answer.
			if u, _ := t.shared.add(ad.Addr, ad.Points, res.Until[i], now); u.After(res.Until[i]) {
				res.Banned[i] = res.Until[i].IsZero()
				res.Until[i] = u
			}
		}
	}
	t.changed()
	return res, nil
}

func (t *BanTable) unban(a banUnbanArgs) (any, error) {
	if !a.Addr.IsValid() {
		return nil, fmt.Errorf("%w: unban an invalid address", errMalformed)
	}
	found := t.bans.Unban(a.Addr)
	if t.shared != nil {
		if !t.shared.until(a.Addr, time.Now()).IsZero() {
			found = true
		}
		t.shared.unban(a.Addr)
	}
	t.log.Info("security module: unban", "addr", a.Addr, "found", found)
	t.changed()
	return banUnbanResult{Found: found}, nil
}

// Bans is the protocol's ban store (protocol.BanStore) backed by the module. Safe for concurrent use.
type Bans struct {
	c   *Client
	log *slog.Logger

	mu      sync.Mutex
	banned  map[netip.Addr]*bannedEntry // guarded by mu: the cached view, from the module's answers
	pending map[netip.Addr]int          // guarded by mu: points not sent yet (no worker served)
}

type bannedEntry struct {
	until   time.Time
	noticed bool
}

// NewBans returns the module's ban store, its cached view loaded from the module (the table a previous worker
// left).
func NewBans(c *Client) *Bans {
	b := &Bans{c: c, log: c.log, banned: map[netip.Addr]*bannedEntry{}, pending: map[netip.Addr]int{}}
	b.List(time.Now())
	return b
}

// Banned looks a up in the cached view; it never calls the module.
func (b *Bans) Banned(a netip.Addr, now time.Time) (banned, first bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.banned[a]
	if e == nil {
		return false, false
	}
	if !now.Before(e.until) {
		delete(b.banned, a)
		return false, false
	}
	first = !e.noticed
	e.noticed = true
	return true, first
}

// Add adds points to a's score in the module and reports whether that banned it. While no worker serves, the
// points wait here for the next Add (and false is returned).
func (b *Bans) Add(a netip.Addr, points int, now time.Time) bool {
	if points <= 0 {
		return false
	}
	b.mu.Lock()
	if _, ok := b.c.Hello(); !ok {
		if len(b.pending) < maxPendingBans || b.pending[a] > 0 {
			b.pending[a] += points
		}
		b.mu.Unlock()
		return false
	}
	args := banAddArgs{Adds: []banAdd{{Addr: a, Points: points}}}
	for p, n := range b.pending {
		if len(args.Adds) == maxBanAdds {
			break
		}
		args.Adds = append(args.Adds, banAdd{Addr: p, Points: n})
		delete(b.pending, p)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), banCallTimeout)
	defer cancel()
	var res banAddResult
	if err := b.c.Call(ctx, opBanAdd, args, &res); err != nil || len(res.Banned) != len(args.Adds) ||
		len(res.Until) != len(args.Adds) {
		b.log.Warn("security module: adding ban points", "err", err)
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, ad := range args.Adds {
		b.viewLocked(ad.Addr, res.Until[i], res.Banned[i])
	}
	return res.Banned[0]
}

// viewLocked records a's ban end in the cached view.
func (b *Bans) viewLocked(a netip.Addr, until time.Time, fresh bool) {
	switch e := b.banned[a]; {
	case until.IsZero():
		delete(b.banned, a)
	case e == nil || fresh:
		b.banned[a] = &bannedEntry{until: until}
	default:
		e.until = until
	}
}

// Unban clears a's score and ban in the module.
func (b *Bans) Unban(a netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), banCallTimeout)
	defer cancel()
	var res banUnbanResult
	err := b.c.Call(ctx, opBanUnban, banUnbanArgs{Addr: a}, &res)
	b.mu.Lock()
	delete(b.banned, a)
	delete(b.pending, a)
	b.mu.Unlock()
	if err != nil {
		b.log.Warn("security module: unban", "addr", a, "err", err)
	}
	return res.Found
}

// List returns the module's table and refreshes the cached view from it.
func (b *Bans) List(now time.Time) []auth.BanInfo {
	ctx, cancel := context.WithTimeout(context.Background(), banCallTimeout)
	defer cancel()
	var out []auth.BanInfo
	if err := b.c.Call(ctx, opBanList, struct{}{}, &out); err != nil {
		b.log.Warn("security module: listing bans", "err", err)
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for a, e := range b.banned {
		if !now.Before(e.until) {
			delete(b.banned, a)
		}
	}
	for _, bi := range out {
		b.viewLocked(bi.Addr, bi.BannedUntil, false)
	}
	return out
}
