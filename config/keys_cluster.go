package config

// Keys of scale-out: several ocgate instances behind one address sharing sessions, address leases, revocations
// and ban points through Redis, and opening each other's cookies with shared keys. ocserv has none of them (it
// cannot share sessions between instances).

import (
	"net/url"
)

var clusterKeys = []key{
	{name: "redis_url", def: `""`, ex: `"redis://10.0.0.5:6379/0"`, field: "RedisURL", conv: redisURL,
		doc: "Redis that several ocgate instances share: redis://HOST:PORT/DB, or rediss://... for TLS. It holds\n" +
			"which instance owns each session, the address leases, revocations (logout, terminate, expiry),\n" +
			"max_same_clients counts and ban points, so that a client roams to any instance with its cookie and\n" +
			"keeps its addresses. Needs cookie_key_file (every instance must open every cookie). Empty: off, one\n" +
			"instance, nothing is shared."},
	{name: "redis_password_file", def: `""`, field: "RedisPasswordFile", conv: path,
		doc: "File holding the Redis password (its first line), read by the security module and the server.\n" +
			"Empty: the password in redis_url, if any."},
	{name: "cookie_key_file", def: `""`, field: "CookieKeyFile", conv: path,
		doc: "File of cookie keys, one per line, each 32 bytes in base64 (`head -c32 /dev/urandom | base64`): the\n" +
			"first seals new cookies, all of them open cookies, so rotating is prepending a line (and removing the\n" +
			"old one after cookie_timeout). Only the security module reads it. Set, a cookie is a sealed token\n" +
			"(session id, user, groups, addresses, expiry) that any instance holding the keys can open; empty:\n" +
			"cookies are random and known only to the instance that issued them."},
	{name: "redis_unavailable", def: `"refuse"`, field: "RedisUnavailable", conv: oneOf("refuse", "local"),
		doc: "What a new login gets while Redis cannot be reached: \"refuse\" (a message saying the service is\n" +
			"degraded) or \"local\" (this instance alone decides, logged as a warning; its sessions and leases are\n" +
			"published when Redis returns, and a lease conflict then ends the newer local session). Live sessions\n" +
			"keep moving traffic either way."},
	{name: "instance_id", def: `""`, ex: `"vpn-a"`, field: "InstanceID", conv: text,
		doc: "This instance's name in Redis (session ownership, takeover messages, `ctl show users --all-instances`).\n" +
			"It must stay the same across restarts and differ between instances. Empty: the host name."},
}

// redisURL checks redis_url: empty, or a redis:// or rediss:// URL with a host.
func redisURL(p *parser, key string, v any) (any, bool) {
	s, ok := p.str(key, v)
	if !ok || s == "" {
		return s, ok
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		p.errf(key, "%q: want redis://HOST:PORT/DB or rediss://HOST:PORT/DB", s)
		return nil, false
	}
	return s, true
}

// checkCluster checks the scale-out keys together.
func (p *parser) checkCluster(c *Config) {
	if c.RedisURL != "" && c.CookieKeyFile == "" {
		p.errf("redis_url", "needs cookie_key_file: instances sharing Redis must open each other's cookies")
	}
	if c.RedisURL == "" {
		for k, v := range map[string]bool{"redis_password_file": c.RedisPasswordFile != "",
			"redis_unavailable": c.RedisUnavailable != "refuse", "instance_id": c.InstanceID != ""} {
			if v {
				p.warnf(k, "has no effect without redis_url")
			}
		}
	}
}
