package auth

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// BanConfig is ocserv's ban-point system: events add points to the client address's score; an address whose
// score reaches MaxScore is refused for BanTime; a score not added to for ResetTime starts over.
type BanConfig struct {
	MaxScore  int // 0 disables bans
	ResetTime time.Duration
	BanTime   time.Duration
}

// Bans tracks the scores of client addresses. Safe for concurrent use; its lock is taken once per connection or
// login, never per packet.
type Bans struct {
	cfg BanConfig

	mu sync.Mutex
	m  map[netip.Addr]*banEntry // guarded by mu
}

type banEntry struct {
	score       int
	last        time.Time // when points were last added
	bannedUntil time.Time
	noticed     bool // the refusal was logged once
}

// BanInfo describes one address (for the management interface).
type BanInfo struct {
	Addr        netip.Addr
	Score       int
	BannedUntil time.Time // zero when not banned
}

// NewBans returns an empty tracker.
func NewBans(cfg BanConfig) *Bans {
	return &Bans{cfg: cfg, m: make(map[netip.Addr]*banEntry)}
}

// Banned reports whether a is banned at now, and whether this is the first refusal since the ban began (so the
// caller logs it once).
func (b *Bans) Banned(a netip.Addr, now time.Time) (banned, first bool) {
	if b == nil || b.cfg.MaxScore <= 0 {
		return false, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[a]
	if e == nil || !now.Before(e.bannedUntil) {
		return false, false
	}
	first = !e.noticed
	e.noticed = true
	return true, first
}

// Add adds points to a's score and reports whether that banned it.
func (b *Bans) Add(a netip.Addr, points int, now time.Time) bool {
	if b == nil || b.cfg.MaxScore <= 0 || points <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[a]
	if e == nil {
		if len(b.m) > 100000 {
			b.expireLocked(now)
		}
		e = &banEntry{}
		b.m[a] = e
	}
	if now.Sub(e.last) > b.cfg.ResetTime && now.After(e.bannedUntil) {
		e.score = 0
	}
	e.score += points
	e.last = now
	if e.score >= b.cfg.MaxScore && !now.Before(e.bannedUntil) {
		e.bannedUntil = now.Add(b.cfg.BanTime)
		e.noticed = false
		e.score = 0
		return true
	}
	return false
}

// Unban clears a's score and ban.
func (b *Bans) Unban(a netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[a]
	delete(b.m, a)
	return ok
}

// List returns the addresses with a score or a ban at now, highest score first.
func (b *Bans) List(now time.Time) []BanInfo {
	recs := b.Export(now)
	out := make([]BanInfo, 0, len(recs))
	for _, r := range recs {
		bi := BanInfo{Addr: r.Addr, Score: r.Score}
		if now.Before(r.BannedUntil) {
			bi.BannedUntil = r.BannedUntil
		}
		out = append(out, bi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out
}

// expireLocked forgets addresses neither banned nor scored within ResetTime.
func (b *Bans) expireLocked(now time.Time) {
	for a, e := range b.m {
		if !now.Before(e.bannedUntil) && now.Sub(e.last) > b.cfg.ResetTime {
			delete(b.m, a)
		}
	}
}

// BanRecord is one address's entry as Export writes it and Import reads it back (a ban table kept across a
// restart of the process that holds it).
type BanRecord struct {
	Addr        netip.Addr `json:"addr"`
	Score       int        `json:"score"`
	Last        time.Time  `json:"last"`
	BannedUntil time.Time  `json:"banned_until,omitzero"`
}

// Export returns the entries still alive at now.
func (b *Bans) Export(now time.Time) []BanRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireLocked(now)
	out := make([]BanRecord, 0, len(b.m))
	for a, e := range b.m {
		out = append(out, BanRecord{Addr: a, Score: e.score, Last: e.last, BannedUntil: e.bannedUntil})
	}
	return out
}

// Import adds rs to the table (an entry already there is replaced).
func (b *Bans) Import(rs []BanRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range rs {
		if r.Addr.IsValid() {
			b.m[r.Addr] = &banEntry{score: r.Score, last: r.Last, bannedUntil: r.BannedUntil}
		}
	}
}

// Until returns when a's ban ends (zero: not banned at now).
func (b *Bans) Until(a netip.Addr, now time.Time) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.m[a]; e != nil && now.Before(e.bannedUntil) {
		return e.bannedUntil
	}
	return time.Time{}
}
