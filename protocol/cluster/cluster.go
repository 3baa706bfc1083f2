// Package cluster is the state several ocgate instances share through Redis (redis_url): which instance owns each
// session, the address leases, revocations, max_same_clients counts, takeover messages and the cluster view.
//
// Keys (prefix "ocgate:"), all with a TTL so that an instance that dies leaves nothing behind for ever:
//
//	sess:{sid}      hash: owner, user, groups, ipv4, ipv6, remote, created (Unix ms)   TTL: ttl, renewed by the owner
//	revoked:{sid}   "1"                                                       TTL: ttl (outlives any renewal)
//	lease:{addr}    the session id holding the address                        TTL: ttl, renewed by the owner
//	user:{user}     sorted set: session ids in use (max_same_clients), score = expiry (ms)
//	takeover:{instance}  pub/sub channel: session ids another instance took over
//
// ttl is cookie_timeout plus the renewal period: a session whose instance died can be taken over for as long as a
// disconnected session waits for its client on one instance. A session id is 128 random bits (auth.Token).
//
// No call here is on a packet path: logins and CONNECTs make a few calls each (bounded by CallTimeout), the
// renewal runs in its own goroutine, and an instance that loses Redis keeps its sessions and retries with
// exponential backoff (Healthy says which).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	prefix = "ocgate:"
	// CallTimeout bounds each call a login or a CONNECT makes.
	CallTimeout = 2 * time.Second
	minBackoff  = 250 * time.Millisecond
	maxBackoff  = 10 * time.Second
)

var (
	// ErrUnavailable is returned when Redis cannot be reached.
	ErrUnavailable = errors.New("shared state (Redis) unavailable")
	// ErrRevoked is returned by Take for a session that was logged out, terminated or expired.
	ErrRevoked = errors.New("session was revoked")
	// ErrLeased is returned by Lease for an address another session holds.
	ErrLeased = errors.New("address leased by another session")
)

// Options configure a Store.
type Options struct {
	URL        string // redis://HOST:PORT/DB or rediss://...
	Password   string // overrides the URL's password when set
	Instance   string // this instance's name
	TTL        time.Duration
	RenewEvery time.Duration // 0 = TTL/3 (at most 10 s)
	Logger     *slog.Logger
	OnTakeover func(sid, by string) // another instance took over a session this one owns
	OnConflict func(sid string)     // renewal found a local session's record or lease held by another
	Owned      func() []Owned       // the local sessions, for renewal and reconcile
	OnHealthy  func(healthy bool)   // Redis became reachable (true) or unreachable (false)
}

// Owned is a local session as renewal sees it.
type Owned struct {
	Rec      Record       // what Redis holds of it (re-created if Redis lost it)
	Addrs    []netip.Addr // its leases
	Admitted bool         // it counts against max_same_clients
}

// Record is a session in the shared state.
type Record struct {
	SID      string     `json:"sid"`
	Instance string     `json:"instance"`
	User     string     `json:"user"`
	Groups   []string   `json:"groups"`
	IPv4     netip.Addr `json:"ipv4"`
	IPv6     netip.Addr `json:"ipv6"`
	Remote   string     `json:"remote"`
	Created  time.Time  `json:"created"`
}

// Store is the shared state, one per instance.
type Store struct {
	rdb     *redis.Client
	o       Options
	log     *slog.Logger
	healthy atomic.Bool
	every   time.Duration

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// quietLogger drops go-redis's internal messages (a dial failure per retry): the store logs the state changes.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietLogger{}) }

// Open connects to Redis. Redis being unreachable is not an error: the store starts degraded and reconnects.
func Open(o Options) (*Store, error) {
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis_url: %w", err)
	}
	if o.Password != "" {
		ro.Password = o.Password
	}
	if ro.TLSConfig != nil && ro.TLSConfig.MinVersion < tls.VersionTLS12 {
		ro.TLSConfig.MinVersion = tls.VersionTLS12
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = time.Second, time.Second, time.Second
	ro.MaxRetries = 1
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	s := &Store{rdb: redis.NewClient(ro), o: o, log: o.Logger.With("component", "cluster"), stop: make(chan struct{})}
	s.every = o.RenewEvery
	if s.every <= 0 {
		s.every = RenewPeriod(o.TTL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	err = s.rdb.Ping(ctx).Err()
	cancel()
	s.healthy.Store(err == nil)
	if err != nil {
		s.log.Warn("shared state: Redis unreachable at start; degraded until it answers", "err", err)
	}
	return s, nil
}

// RenewPeriod is how often an instance renews its sessions for a TTL of ttl: a third of it, at most 10 s.
func RenewPeriod(ttl time.Duration) time.Duration {
	return max(min(ttl/3, 10*time.Second), time.Second)
}

// PasswordFromFile reads a password file's first line ("" for path "").
func PasswordFromFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("redis_password_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

// Start begins the background work: the takeover subscription, renewal and the health checks.
func (s *Store) Start() {
	s.wg.Add(2)
	go s.subscribe()
	go s.maintain()
}

// Close stops the background work and closes the connections.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return s.rdb.Close()
}

// Instance is this instance's name.
func (s *Store) Instance() string { return s.o.Instance }

// Healthy reports whether Redis answered the last call.
func (s *Store) Healthy() bool { return s.healthy.Load() }

// note records the outcome of a call: a network failure marks the store degraded.
func (s *Store) note(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		s.setHealthy(true)
		return err
	}
	if isRedisReply(err) {
		return err // Redis answered (a script error, WRONGTYPE): reachable
	}
	s.setHealthy(false)
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

func isRedisReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func (s *Store) setHealthy(h bool) {
	if s.healthy.Swap(h) != h {
		if h {
			s.log.Info("shared state: Redis reachable again")
		} else {
			s.log.Error("shared state: Redis unreachable; live sessions continue, new logins follow redis_unavailable")
		}
		if s.o.OnHealthy != nil {
			s.o.OnHealthy(h)
		}
	}
}

func ctxCall() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), CallTimeout)
}

func sessKey(sid string) string         { return prefix + "sess:" + sid }
func revokedKey(sid string) string      { return prefix + "revoked:" + sid }
func leaseKey(a netip.Addr) string      { return prefix + "lease:" + a.String() }
func userKey(u string) string           { return prefix + "user:" + u }
func takeoverChan(inst string) string   { return prefix + "takeover:" + inst }
func expiryScore(ttl time.Duration) int { return int(time.Now().Add(ttl).UnixMilli()) }

// Create records a new session owned by this instance.
func (s *Store) Create(r Record) error {
	ctx, cancel := ctxCall()
	defer cancel()
	return s.note(s.create(ctx, r))
}

func (s *Store) create(ctx context.Context, r Record) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, sessKey(r.SID), "owner", s.o.Instance, "user", r.User, "groups", strings.Join(r.Groups, ","),
			"ipv4", addrStr(r.IPv4), "ipv6", addrStr(r.IPv6), "remote", r.Remote, "created", r.Created.UnixMilli())
		p.PExpire(ctx, sessKey(r.SID), s.o.TTL)
		return nil
	})
	return err
}

func addrStr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// takeScript makes this instance the owner of a live, unrevoked session; it returns the previous owner, or an
// error reply "revoked" / "unknown".
var takeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('revoked') end
local old = redis.call('HGET', KEYS[1], 'owner')
if not old then return redis.error_reply('unknown') end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'remote', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return old`)

// Take makes this instance the session's owner (a client roamed here with its cookie) and tells the previous
// owner, if another instance, to let it go. It returns the session's record (this instance its owner now) and the
// previous owner; ErrRevoked when the session was logged out, terminated or has expired (also when Redis no longer
// knows it).
func (s *Store) Take(sid, remote string) (rec Record, prev string, err error) {
	ctx, cancel := ctxCall()
	defer cancel()
	old, err := takeScript.Run(ctx, s.rdb, []string{sessKey(sid), revokedKey(sid)}, s.o.Instance, remote,
		s.o.TTL.Milliseconds()).Text()
	if err != nil {
		if isRedisReply(err) && (strings.Contains(err.Error(), "revoked") || strings.Contains(err.Error(), "unknown")) {
			s.setHealthy(true)
			return Record{}, "", ErrRevoked
		}
		return Record{}, "", s.note(err)
	}
	s.setHealthy(true)
	if old != s.o.Instance {
		if err := s.rdb.Publish(ctx, takeoverChan(old), sid+" "+s.o.Instance).Err(); err != nil {
			s.log.Warn("shared state: cannot tell the previous owner of a session to let it go", "sid", sid, "owner", old, "err", err)
		}
	}
	h, err := s.rdb.HGetAll(ctx, sessKey(sid)).Result()
	if err != nil {
		return Record{}, old, s.note(err)
	}
	return recordOf(sid, h), old, nil
}

func recordOf(sid string, h map[string]string) Record {
	r := Record{SID: sid, Instance: h["owner"], User: h["user"], Remote: h["remote"]}
	if g := h["groups"]; g != "" {
		r.Groups = strings.Split(g, ",")
	}
	r.IPv4, _ = netip.ParseAddr(h["ipv4"])
	r.IPv6, _ = netip.ParseAddr(h["ipv6"])
	if c, err := strconv.ParseInt(h["created"], 10, 64); err == nil {
		r.Created = time.UnixMilli(c)
	}
	return r
}

// leaseScript takes or renews the lease of an address for a session: held by the same session (renewed) or free
// (taken); held by another, refused (0).
var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// Lease gives addr to session sid: fencing, an address is never held by two sessions. A lease held by the same
// session (a roam) is taken over. ErrLeased when another session holds it.
func (s *Store) Lease(addr netip.Addr, sid string) error {
	ctx, cancel := ctxCall()
	defer cancel()
	n, err := leaseScript.Run(ctx, s.rdb, []string{leaseKey(addr)}, sid, s.o.TTL.Milliseconds()).Int()
	if err != nil {
		return s.note(err)
	}
	s.setHealthy(true)
	if n == 0 {
		return ErrLeased
	}
	return nil
}

// releaseScript deletes a lease only if the session still holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Release gives up the leases of sid on addrs (those another session holds now are left alone).
func (s *Store) Release(sid string, addrs ...netip.Addr) {
	ctx, cancel := ctxCall()
	defer cancel()
	for _, a := range addrs {
		if a.IsValid() {
			if err := s.note(releaseScript.Run(ctx, s.rdb, []string{leaseKey(a)}, sid).Err()); err != nil {
				return
			}
		}
	}
}

// revokeScript revokes a session this instance owns (or that nobody owns any more): a session another instance
// took over is left to it (a takeover message that did not arrive must not let the old owner's cookie timer end
// the session on its new instance). It returns 1 when it revoked.
var revokeScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
end
return 1`)

// Revoke ends a session owned here for every instance (logout, terminate, cookie_timeout): its cookie no longer
// opens a session anywhere, its leases and its place in max_same_clients are released. A session another instance
// owns now is left alone (false).
func (s *Store) Revoke(sid, user string, addrs ...netip.Addr) (bool, error) {
	ctx, cancel := ctxCall()
	defer cancel()
	keys := []string{sessKey(sid), revokedKey(sid), userKey(user)}
	for _, a := range addrs {
		if a.IsValid() {
			keys = append(keys, leaseKey(a))
		}
	}
	n, err := revokeScript.Run(ctx, s.rdb, keys, s.o.Instance, sid, s.o.TTL.Milliseconds()).Int()
	if err != nil {
		return false, s.note(err)
	}
	s.setHealthy(true)
	return n == 1, nil
}

// admitScript counts a session against max_same_clients across instances: expired members are dropped; a
// member is admitted again; otherwise it is added when fewer than ARGV[2] are in use.
var admitScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) return 1 end
if tonumber(ARGV[2]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`)

// Admit counts session sid of user against max_same_clients n (0: unlimited, counted all the same) across
// instances; false when n sessions of the user are in use elsewhere.
func (s *Store) Admit(user, sid string, n int) (bool, error) {
	ctx, cancel := ctxCall()
	defer cancel()
	now := time.Now().UnixMilli()
	ok, err := admitScript.Run(ctx, s.rdb, []string{userKey(user)}, sid, n, now, expiryScore(s.o.TTL),
		s.o.TTL.Milliseconds()).Int()
	if err != nil {
		return false, s.note(err)
	}
	s.setHealthy(true)
	return ok == 1, nil
}

// renewScript renews a session owned here: its record (re-created when Redis lost it — a restart without
// persistence, or a session created while Redis was unreachable — unless it was revoked), its place in the user's
// set, and its leases. A lease another session holds (two instances gave the address while Redis was
// unreachable) goes to the older session (created earlier; the lower id on a tie), whose instance keeps it; the
// newer one's renewal then fails. It returns 0 when the record belongs to another instance, a lease to an older
// session, or the session was revoked.
var renewScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'user', ARGV[5], 'groups', ARGV[6], 'ipv4', ARGV[7], 'ipv6', ARGV[8],
    'remote', ARGV[9], 'created', ARGV[10])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[11] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
for i = 4, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if cur and cur ~= ARGV[2] then
    local other = tonumber(redis.call('HGET', ARGV[12] .. cur, 'created') or '0')
    local mine = tonumber(ARGV[10])
    if other < mine or (other == mine and cur < ARGV[2]) then return 0 end
  end
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3]) end
return 1`)

// renew renews every local session, publishing those Redis does not know (reconcile). It reports the sessions
// whose record or leases another instance or session holds, or that were revoked.
func (s *Store) renew(owned []Owned) (conflicts []string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*CallTimeout)
	defer cancel()
	// The script is loaded once per round; the pipeline then sends its digest only (EVALSHA): Run's fallback
	// from NOSCRIPT to EVAL cannot happen inside a pipeline.
	if err := renewScript.Load(ctx, s.rdb).Err(); err != nil {
		return nil, s.note(err)
	}
	ttl, score := s.o.TTL.Milliseconds(), expiryScore(s.o.TTL)
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, o := range owned {
			r := o.Rec
			keys := []string{sessKey(r.SID), revokedKey(r.SID), userKey(r.User)}
			for _, a := range o.Addrs {
				keys = append(keys, leaseKey(a))
			}
			admitted := "0"
			if o.Admitted {
				admitted = "1"
			}
			renewScript.EvalSha(ctx, p, keys, s.o.Instance, r.SID, ttl, score, r.User, strings.Join(r.Groups, ","),
				addrStr(r.IPv4), addrStr(r.IPv6), r.Remote, r.Created.UnixMilli(), admitted, prefix+"sess:")
		}
		return nil
	})
	if err != nil && !isRedisReply(err) {
		return nil, s.note(err)
	}
	s.setHealthy(true)
	for i, c := range cmds {
		if n, err := c.(*redis.Cmd).Int(); err == nil && n == 0 {
			conflicts = append(conflicts, owned[i].Rec.SID)
		}
	}
	return conflicts, nil
}

// maintain renews the local sessions every period while Redis answers, and checks for it with exponential
// backoff while it does not.
func (s *Store) maintain() {
	defer s.wg.Done()
	backoff := minBackoff
	wait := s.every
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		if !s.Healthy() {
			ctx, cancel := ctxCall()
			err := s.rdb.Ping(ctx).Err()
			cancel()
			if err != nil {
				backoff = min(2*backoff, maxBackoff)
				wait = backoff
				continue
			}
			s.setHealthy(true) // reconcile below: the local sessions are published
		}
		backoff, wait = minBackoff, s.every
		if s.o.Owned == nil {
			continue
		}
		conflicts, err := s.renew(s.o.Owned())
		if err != nil {
			s.log.Warn("shared state: renewal failed", "err", err)
			wait = backoff
			continue
		}
		for _, sid := range conflicts {
			if s.o.OnConflict != nil {
				s.o.OnConflict(sid)
			}
		}
	}
}

// RenewNow renews the local sessions at once (tests, and after Redis returns).
func (s *Store) RenewNow() ([]string, error) {
	if s.o.Owned == nil {
		return nil, nil
	}
	return s.renew(s.o.Owned())
}

// subscribe delivers takeover messages for this instance to OnTakeover.
func (s *Store) subscribe() {
	defer s.wg.Done()
	ps := s.rdb.Subscribe(context.Background(), takeoverChan(s.o.Instance))
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-s.stop:
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			sid, by, _ := strings.Cut(m.Payload, " ")
			if s.o.OnTakeover != nil {
				s.o.OnTakeover(sid, by)
			}
		}
	}
}

// All returns every session in the shared state (`ctl show users --all-instances`).
func (s *Store) All() ([]Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*CallTimeout)
	defer cancel()
	var out []Record
	iter := s.rdb.Scan(ctx, 0, prefix+"sess:*", 512).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		h, err := s.rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, s.note(err)
		}
		if len(h) > 0 {
			out = append(out, recordOf(strings.TrimPrefix(key, prefix+"sess:"), h))
		}
	}
	if err := iter.Err(); err != nil {
		return nil, s.note(err)
	}
	return out, nil
}
