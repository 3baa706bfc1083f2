package secmod

// Ban points shared through Redis (redis_url): wrong passwords on one instance ban the address on every instance,
// and bans survive restarts of all of them. The worker's table stays the local view (and the fallback while
// Redis cannot be reached); Redis adds what the other instances counted:
//
//	ocgate:ban:score:{addr}  points, TTL ban_reset_time (renewed by each add: ocserv's reset after quiet)
//	ocgate:ban:until:{addr}  Unix ms the ban ends, TTL ban_time
//
// Each call is bounded (sharedBanTimeout); a failure is logged (at most once a minute) and the local table
// decides alone.

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"ocgate/auth"
)

const sharedBanTimeout = 500 * time.Millisecond

// SharedBans keeps ban points in Redis.
type SharedBans struct {
	rdb     *redis.Client
	cfg     auth.BanConfig
	log     *slog.Logger
	lastErr atomic.Int64 // Unix seconds of the last logged failure
}

// OpenSharedBans returns ban points kept in the Redis of url (redis:// or rediss://); password overrides the URL's.
// Redis need not answer yet.
func OpenSharedBans(url, password string, cfg auth.BanConfig, log *slog.Logger) (*SharedBans, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if password != "" {
		o.Password = password
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.MaxRetries = sharedBanTimeout, sharedBanTimeout, sharedBanTimeout, 0
	return &SharedBans{rdb: redis.NewClient(o), cfg: cfg, log: log}, nil
}

// Close closes the connections.
func (s *SharedBans) Close() error { return s.rdb.Close() }

func banKeys(a netip.Addr) []string {
	return []string{"ocgate:ban:score:" + a.String(), "ocgate:ban:until:" + a.String()}
}

// banAddScript adds points; at the threshold it bans (unless banned already). A ban the local table decided
// (ARGV[6], Unix ms; the local score counts what this instance saw while Redis did not answer, or before Redis
// restarted empty) is recorded too, so that the other instances refuse the address as well. It returns the end
// of the ban in Unix ms, 0 when not banned.
var banAddScript = redis.NewScript(`
local now = tonumber(ARGV[4])
local banned = tonumber(redis.call('GET', KEYS[2]) or '0')
if banned > now then return banned end
local score = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
banned = 0
if score >= tonumber(ARGV[3]) then banned = now + tonumber(ARGV[5]) end
if tonumber(ARGV[6]) > banned then banned = tonumber(ARGV[6]) end
if banned > now then
  redis.call('SET', KEYS[2], banned, 'PX', banned - now)
  redis.call('DEL', KEYS[1])
  return banned
end
return 0`)

// add adds points to a's shared score, with localUntil the local table's ban end (zero: not banned here); it
// returns when a's ban ends (zero: not banned) and whether Redis answered.
func (s *SharedBans) add(a netip.Addr, points int, localUntil, now time.Time) (time.Time, bool) {
	if s.cfg.MaxScore <= 0 {
		return time.Time{}, true
	}
	var local int64
	if !localUntil.IsZero() {
		local = localUntil.UnixMilli()
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedBanTimeout)
	defer cancel()
	ms, err := banAddScript.Run(ctx, s.rdb, banKeys(a), points, s.cfg.ResetTime.Milliseconds(), s.cfg.MaxScore,
		now.UnixMilli(), s.cfg.BanTime.Milliseconds(), local).Int64()
	if err != nil {
		s.failed(err)
		return time.Time{}, false
	}
	return msTime(ms), true
}

// until returns when a's shared ban ends (zero: not banned, or Redis did not answer).
func (s *SharedBans) until(a netip.Addr, now time.Time) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), sharedBanTimeout)
	defer cancel()
	v, err := s.rdb.Get(ctx, banKeys(a)[1]).Result()
	if err != nil {
		if err != redis.Nil {
			s.failed(err)
		}
		return time.Time{}
	}
	ms, _ := strconv.ParseInt(v, 10, 64)
	if t := msTime(ms); t.After(now) {
		return t
	}
	return time.Time{}
}

// unban clears a's shared score and ban.
func (s *SharedBans) unban(a netip.Addr) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedBanTimeout)
	defer cancel()
	if err := s.rdb.Del(ctx, banKeys(a)...).Err(); err != nil {
		s.failed(err)
	}
}

func (s *SharedBans) failed(err error) {
	now := time.Now().Unix()
	if last := s.lastErr.Load(); now-last >= 60 && s.lastErr.CompareAndSwap(last, now) {
		s.log.Warn("security module: shared ban points unavailable (Redis); this instance's table decides alone", "err", err)
	}
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
