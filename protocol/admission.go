package protocol

// Admission of new TCP connections, decided in the accept loop before any TLS work, so that excess connections
// are shed (closed at once) instead of queued behind an attack:
//
//	accept ──► banned? ──► ban points ──► rate_limit_ms (per source) ──► max_unauth_per_ip ──► max_unauth_clients ──► serve
//
// A source is an IPv4 address or an IPv6 /64 (one host's share of a network, as ocserv's bans count it). A
// connection holds its place in the unauthenticated counts until its login succeeds, it carries a tunnel, or it
// closes. Memory is constant per source: one small entry, forgotten once its bucket is full and it holds no
// connection.

import (
	"net/netip"
	"sync"
	"time"

	"ocgate/auth"
	"ocgate/config"
)

// BanStore keeps the ban points of client addresses (ocserv's ban-point system): the accept loop asks Banned and
// adds ban_points_connection for every connection, a failed handshake or login adds more, the management
// interface lists and unbans. Banned runs per accepted connection and must not wait; Add runs per connection too
// and should be cheap. *auth.Bans is the in-process implementation; the security module's (egress/secmod) keeps
// the table out of this process.
type BanStore interface {
	// Banned reports whether a is banned at now, and whether this is the first refusal since the ban began.
	Banned(a netip.Addr, now time.Time) (banned, first bool)
	// Add adds points to a's score and reports whether that banned it.
	Add(a netip.Addr, points int, now time.Time) bool
	// Unban clears a's score and ban, reporting whether it had an entry.
	Unban(a netip.Addr) bool
	// List returns the addresses with a score or a ban at now, highest score first.
	List(now time.Time) []auth.BanInfo
}

var _ BanStore = (*auth.Bans)(nil)

// BanConfigOf returns the ban settings of cfg.
func BanConfigOf(cfg *config.Config) auth.BanConfig {
	return auth.BanConfig{MaxScore: cfg.MaxBanScore, ResetTime: cfg.BanResetTime, BanTime: cfg.BanTime}
}

// rateBurst is how many connections a source may open at once under rate_limit_ms: a client reconnecting after a
// network change opens one or two; a few users behind one NAT address logging in together, a few more.
const rateBurst = 20

// minSweep is the number of sources below which forgotten entries are not swept.
const minSweep = 4096

// admission holds the per-source token buckets and the counts of unauthenticated connections. Safe for
// concurrent use.
type admission struct {
	every     time.Duration // one connection per source per every; 0 = no rate limit
	maxUnauth int           // 0 = unlimited
	maxPerSrc int           // 0 = unlimited

	mu        sync.Mutex
	unauth    int                      // guarded by mu: connections not authenticated yet
	sources   map[netip.Prefix]*source // guarded by mu
	nextSweep int                      // guarded by mu: sweep when len(sources) reaches it
}

// source is one source's state.
type source struct {
	// tat is the time at which the source's bucket is full again (GCRA's "theoretical arrival time"): each
	// connection moves it every later; a connection that would move it more than the burst ahead is refused.
	tat    time.Time
	unauth int // its connections not authenticated yet
}

func newAdmission(rateLimit time.Duration, maxUnauth, maxPerSrc int) *admission {
	return &admission{every: rateLimit, maxUnauth: maxUnauth, maxPerSrc: maxPerSrc,
		sources: make(map[netip.Prefix]*source), nextSweep: minSweep}
}

// sourceOf is the source a client address counts against: the address itself, or its /64 for IPv6.
func sourceOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// admit decides on a new connection from src at now. On success the connection holds a place in the
// unauthenticated counts, which release gives back; on refusal it says why.
func (ad *admission) admit(src netip.Prefix, now time.Time) (ok bool, why string) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	sc := ad.sources[src]
	if sc == nil {
		if len(ad.sources) >= ad.nextSweep {
			ad.sweepLocked(now)
		}
		sc = &source{}
		ad.sources[src] = sc
	}
	if ad.every > 0 {
		tat := sc.tat
		if tat.Before(now) {
			tat = now
		}
		if tat.Sub(now) > (rateBurst-1)*ad.every {
			return false, "rate_limit_ms"
		}
		sc.tat = tat.Add(ad.every)
	}
	if ad.maxPerSrc > 0 && sc.unauth >= ad.maxPerSrc {
		return false, "max_unauth_per_ip"
	}
	if ad.maxUnauth > 0 && ad.unauth >= ad.maxUnauth {
		return false, "max_unauth_clients"
	}
	sc.unauth++
	ad.unauth++
	return true, ""
}

// release gives back the place a connection of src held in the unauthenticated counts. Call it once per
// successful admit.
func (ad *admission) release(src netip.Prefix) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.unauth--
	if sc := ad.sources[src]; sc != nil {
		sc.unauth--
	}
}

// unauthenticated returns the number of connections not authenticated yet.
func (ad *admission) unauthenticated() int {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	return ad.unauth
}

// sweepLocked forgets the sources with a full bucket and no connection, and sets when to sweep next: after the
// table has doubled, so that sweeping costs O(1) per connection. ad.mu must be held.
func (ad *admission) sweepLocked(now time.Time) {
	for p, sc := range ad.sources {
		if sc.unauth == 0 && !sc.tat.After(now) {
			delete(ad.sources, p)
		}
	}
	ad.nextSweep = max(minSweep, 2*len(ad.sources))
}
