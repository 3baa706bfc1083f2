package config

// The key table: every key ocgate reads or accepts is declared once, here and in the keys_*.go files, with its
// default, its documentation, where it may appear and how it is applied. Parsing, the defaults (Default and
// `ocgate config defaults`), the per-user key list and the list of ocserv keys accepted with a warning all come
// from it.

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// scope says which files may set a key.
type scope uint8

const (
	global   scope = iota // the global file only; an error in per-user and per-group files
	anyFile               // the global file, and per-user and per-group files
	userOnly              // per-user and per-group files only; an error in the global file
)

// status says what ocgate does with a key.
type status uint8

const (
	applied status = iota // implemented
	notYet                // an ocserv key ocgate means to implement: accepted with a warning
	ignored               // an ocserv key that makes no sense for ocgate: accepted with a warning giving why
)

// A key is one configuration key.
type key struct {
	name   string // ocserv's option name with '-' replaced by '_'
	def    string // the default, a TOML value; "" = unset (printed commented out, with ex)
	ex     string // for a key unset by default: an example value
	doc    string // what the key does, for `ocgate config defaults`; lines separated by "\n"
	scope  scope
	status status
	why    string // ignored: the reason, in the warning

	// The global file. field is the Config field the key sets: through conv when it is set, otherwise through
	// set, which may read other keys of the file (p.vals) and set more fields. A key without either (field set
	// only for the record) is applied by another key.
	field string
	conv  conv
	set   func(p *parser, c *Config, v any)

	// Per-user and per-group files (scope anyFile or userOnly): userField is the UserConfig field set through
	// conv, or user applies the value. Neither: "accepted but not implemented per user yet".
	userField string
	user      func(p *parser, s *userState, v any)
	// userWhy: a key per-user and per-group files may set but ocgate does not apply there; the warning gives
	// this reason (instead of "not implemented per user yet").
	userWhy string

	// inert: the value is kept but has no effect yet; a value other than the default is warned about with this
	// text. netstack: only the netstack datapath uses the key; with datapath = "tun" a value other than the
	// default is warned about.
	inert    string
	netstack bool
}

// keyTable lists every key, in the order `ocgate config defaults` prints them and Parse applies them.
var keyTable = slices.Concat(serverKeys, networkKeys, sessionKeys, processKeys, datapathKeys, clusterKeys, edgeKeys, userKeys, ocservKeys)

// ocgateOnly are the keys ocserv does not have; every other key is ocserv's option of the same name with '_'
// written '-' (ocservName).
var ocgateOnly = map[string]bool{
	"dtls_fast_path": true, "dns_upstream": true, "request_timeout": true, "max_unauth_clients": true,
	"max_unauth_per_ip": true, "sec_mod_user": true, "metrics_listen": true, "datapath": true, "egress_allow": true,
	"egress_deny": true, "icmp_echo": true, "flow_log": true, "max_flows_per_session": true,
	"max_half_open_per_session": true, "max_dials_in_flight": true, "tcp_keepalive": true, "udp_idle_timeout": true,
	"socks5_listen": true, "socks5_user": true, "socks5_password": true, "client_to_client": true,
	"redis_url": true, "redis_password_file": true, "cookie_key_file": true, "redis_unavailable": true, "instance_id": true,
}

// ocservName is the name ocserv's configuration files give the key ("" for an ocgate key).
func (k *key) ocservName() string {
	if ocgateOnly[k.name] {
		return ""
	}
	return strings.ReplaceAll(k.name, "_", "-")
}

// keyByName indexes keyTable.
var keyByName = func() map[string]*key {
	m := make(map[string]*key, len(keyTable))
	for i := range keyTable {
		k := &keyTable[i]
		if m[k.name] != nil {
			panic("config: key declared twice: " + k.name)
		}
		m[k.name] = k
	}
	return m
}()

// perUserApplied reports whether a per-user or per-group file applies the key.
func (k *key) perUserApplied() bool {
	return k.status == applied && (k.userField != "" || k.user != nil)
}

// apply applies the value of k in the global file to c.
func (k *key) apply(p *parser, c *Config, v any) {
	switch {
	case k.conv != nil:
		if x, ok := k.conv(p, k.name, v); ok {
			reflect.ValueOf(c).Elem().FieldByName(k.field).Set(reflect.ValueOf(x))
		}
	case k.set != nil:
		k.set(p, c, v)
	}
}

// fieldValue is the value of k's field in c (invalid when k has no field).
func (k *key) fieldValue(c *Config) reflect.Value {
	if k.field == "" {
		return reflect.Value{}
	}
	return reflect.ValueOf(c).Elem().FieldByName(k.field)
}

// defaults is the configuration every key's default makes, before derive.
var defaults = sync.OnceValue(func() Config {
	var b strings.Builder
	for _, k := range keyTable {
		if k.def != "" {
			fmt.Fprintf(&b, "%s = %s\n", k.name, k.def)
		}
	}
	data := []byte(b.String())
	p := newParser("defaults", "", data)
	if _, err := p.decode(data); err != nil {
		panic("config: the defaults do not parse: " + err.Error())
	}
	var c Config
	p.applyGlobal(&c)
	if err := p.err(); err != nil {
		panic("config: the defaults do not apply: " + err.Error())
	}
	return c
})

// DefaultsTOML is a complete, commented default configuration: every key with its default (keys without one
// commented out, with an example), then the ocserv keys ocgate accepts with a warning.
func DefaultsTOML() string {
	var b strings.Builder
	b.WriteString("# ocgate configuration. Keys are ocserv's option names with '-' replaced by '_'.\n")
	b.WriteString("# Relative paths resolve against this file's directory. Durations are in seconds.\n")
	b.WriteString("# Each key says where it may be set: the global file only, also per-user and per-group files\n")
	b.WriteString("# (config_per_user, config_per_group), or only those, and its name in ocserv's files (ocserv.conf,\n")
	b.WriteString("# config-per-user), where it has one.\n\n")
	keys, accepted := keysByStatus()
	for _, k := range keys {
		doc := k.doc
		switch k.scope {
		case global:
			doc += "\nGlobal file only."
		case anyFile:
			if k.perUserApplied() {
				doc += "\nCan be set per user and per group."
			} else {
				doc += "\nIgnored in per-user and per-group files: " + k.userWhy + "."
			}
		case userOnly:
			doc += "\nPer-user and per-group files only."
		}
		if n := k.ocservName(); n != "" {
			doc += " ocserv: " + n + "."
		} else {
			doc += " An ocgate key (ocserv has none)."
		}
		for l := range strings.SplitSeq(doc, "\n") {
			fmt.Fprintf(&b, "# %s\n", l)
		}
		if k.def != "" {
			fmt.Fprintf(&b, "%s = %s\n\n", k.name, k.def)
		} else {
			fmt.Fprintf(&b, "# %s = %s\n\n", k.name, k.ex)
		}
	}
	b.WriteString("# ocserv keys accepted with a warning, without effect:\n")
	for _, k := range accepted {
		fmt.Fprintf(&b, "#   %s (ocserv: %s): %s\n", k.name, k.ocservName(), k.acceptedWhy())
	}
	return b.String()
}

// accepted is a key ocgate accepts from ocserv's configurations with a warning: not implemented yet (why == "")
// or ignored for the reason why.
func accepted(name string, sc scope, why string) key {
	if why == "" {
		return key{name: name, scope: sc, status: notYet}
	}
	return key{name: name, scope: sc, status: ignored, why: why}
}
