package config

// Reading one file: decode the TOML, sort its keys against the key table (unknown, refused, accepted with a
// warning, applied), and report every problem as "FILE:LINE: KEY: message". The decoder's own errors (syntax)
// carry the line; for the others, line finds where the key is set.

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// parser collects every error and warning of one file.
type parser struct {
	path  string
	dir   string // relative paths resolve against it; "" leaves them as they are
	lines []string
	vals  map[string]any // the file's top-level keys and their decoded values
	errs  []error
	warns []string
}

func newParser(path, dir string, data []byte) *parser {
	return &parser{path: path, dir: dir, lines: strings.Split(string(data), "\n")}
}

// line finds the line where key is set (top-level "key =", or a table header for dotted keys and for tables);
// 0 if unknown. A dotted key not found is looked for as its first part (an inline table: "a = {b = 1}").
func (p *parser) line(key string) int {
	first, _, dotted := strings.Cut(key, ".")
	re := regexp.MustCompile(`^\s*(["']?)` + regexp.QuoteMeta(key) + `(["']?)\s*=`)
	tbl := regexp.MustCompile(`^\s*\[+\s*["']?` + regexp.QuoteMeta(first) + `["']?\s*[.\]]`)
	if dotted { // a nested table: [a.b]
		full := regexp.MustCompile(`^\s*\[+\s*` + regexp.QuoteMeta(key) + `\s*\]`)
		for i, l := range p.lines {
			if full.MatchString(l) {
				return i + 1
			}
		}
	}
	for i, l := range p.lines {
		if re.MatchString(l) || dotted && tbl.MatchString(l) {
			return i + 1
		}
	}
	if !dotted { // a table: [key]
		for i, l := range p.lines {
			if tbl.MatchString(l) {
				return i + 1
			}
		}
		return 0
	}
	return p.line(first)
}

func (p *parser) errf(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s: %s", p.path, p.line(key), key, fmt.Sprintf(format, args...)))
}

func (p *parser) warnf(key, format string, args ...any) {
	p.warns = append(p.warns, fmt.Sprintf("%s:%d: %s: %s", p.path, p.line(key), key, fmt.Sprintf(format, args...)))
}

// err returns every error of the file, or nil.
func (p *parser) err() error { return errors.Join(p.errs...) }

// decode decodes data; errors name the file, the line and (when known) the key. It sets p.vals.
func (p *parser) decode(data []byte) (toml.MetaData, error) {
	p.vals = map[string]any{}
	md, err := toml.Decode(string(data), &p.vals)
	if err == nil {
		return md, nil
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if hint := p.tomlHint(pe.Position.Line); hint != "" {
			return md, fmt.Errorf("%s:%d: %s", p.path, pe.Position.Line, hint)
		}
		if pe.LastKey == "" {
			return md, fmt.Errorf("%s:%d: %s", p.path, pe.Position.Line, pe.Message)
		}
		return md, fmt.Errorf("%s:%d: %s: %s", p.path, pe.Position.Line, pe.LastKey, pe.Message)
	}
	return md, fmt.Errorf("%s:%d: %w", p.path, 0, err)
}

// tomlHint explains a TOML syntax error at line n in ocserv's terms, or returns "": a value written unquoted
// (`route = 10.0.0.0/8`) gets its quoted form, a key set on several lines (ocserv's way of giving a list) gets the
// one list TOML needs.
func (p *parser) tomlHint(n int) string {
	if n < 1 || n > len(p.lines) {
		return ""
	}
	l := strings.TrimSpace(p.lines[n-1])
	k, v, ok := strings.Cut(l, "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || k == "" || strings.ContainsAny(k, " \t\"'[.") {
		return ""
	}
	var vals []string
	var at []string
	for i, o := range p.lines {
		ok, ov, found := strings.Cut(strings.TrimSpace(o), "=")
		if found && strings.TrimSpace(ok) == k {
			vals = append(vals, quoteTOML(strings.TrimSpace(ov)))
			at = append(at, fmt.Sprint(i+1))
		}
	}
	if len(vals) > 1 {
		return fmt.Sprintf("%s: set on lines %s; TOML takes the values as one list: %s = [%s]", k,
			strings.Join(at, ", "), k, strings.Join(vals, ", "))
	}
	if unquotedTOML(v) {
		return fmt.Sprintf("%s: the value must be quoted in TOML: %s = %s", k, k, quoteTOML(v))
	}
	return ""
}

// quoteTOML quotes a value as written in a file, unless it is already a TOML value.
func quoteTOML(v string) string {
	if unquotedTOML(v) {
		return tomlString(sanitizeOcserv(v))
	}
	return v
}

// sortKeys reports the file's unknown keys and the keys not allowed in it, and warns about the keys accepted
// without effect; the others are left to apply. perUser: a per-user or per-group file.
func (p *parser) sortKeys(md toml.MetaData, perUser bool) {
	for _, k := range md.Keys() {
		name, kd := k.String(), keyByName[k[0]]
		switch {
		case kd == nil:
			p.errf(name, "unknown key")
		case len(k) > 1:
			// inside a table given to a known key: reported once, at the key
		case !perUser && kd.scope == userOnly:
			p.errf(name, "allowed only in per-user and per-group files (config_per_user, config_per_group)")
		case perUser && kd.scope == global:
			p.errf(name, "not allowed in a per-user or per-group file")
		case kd.status == ignored:
			p.warnf(name, "ignored: %s", kd.why)
		case !perUser && kd.status == notYet:
			p.warnf(name, "accepted but not implemented yet")
		case perUser && !kd.perUserApplied() && kd.userWhy != "":
			p.warnf(name, "ignored per user: %s", kd.userWhy)
		case perUser && !kd.perUserApplied():
			p.warnf(name, "accepted but not implemented per user yet")
		}
	}
}

// resolve makes a relative path absolute against the file's directory.
func (p *parser) resolve(v string) string {
	if v == "" || filepath.IsAbs(v) || p.dir == "" {
		return v
	}
	return filepath.Join(p.dir, v)
}

// The TOML value checks. Each reports a wrong type as an error of the key and returns ok = false.

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

func (p *parser) wrongType(key string, v any, want string) {
	p.errf(key, "want %s, not %s", want, typeName(v))
}

func (p *parser) str(key string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		p.wrongType(key, v, "a string")
	}
	return s, ok
}

func (p *parser) int64(key string, v any) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		p.wrongType(key, v, "an integer")
	}
	return n, ok
}

func (p *parser) bool(key string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		p.wrongType(key, v, "true or false")
	}
	return b, ok
}

// strs reads an array of strings; a single string is a list of one, as in ocserv's files (`route = "10.0.0.0/8"`).
func (p *parser) strs(key string, v any) ([]string, bool) {
	if s, ok := v.(string); ok {
		return []string{s}, true
	}
	list, ok := v.([]any)
	if !ok {
		p.wrongType(key, v, "an array of strings")
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			p.errf(key, "want an array of strings, not one holding %s", typeName(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// A conv checks and converts a key's TOML value into the type of the field the key is bound to.
type conv func(p *parser, key string, v any) (any, bool)

// integer converts an integer within lo..hi into an int.
func integer(lo, hi int64) conv {
	return func(p *parser, key string, v any) (any, bool) {
		n, ok := p.int64(key, v)
		if !ok {
			return nil, false
		}
		if n < lo || n > hi {
			p.errf(key, "%d is out of range (%d to %d)", n, lo, hi)
			return nil, false
		}
		return int(n), true
	}
}

// seconds converts a number of seconds, at least min, into a time.Duration.
func seconds(min int64) conv {
	return func(p *parser, key string, v any) (any, bool) {
		n, ok := p.int64(key, v)
		if !ok {
			return nil, false
		}
		if n < 0 || n > 10*365*86400 {
			p.errf(key, "%d is not a valid number of seconds", n)
			return nil, false
		}
		if n < min {
			p.errf(key, "must be at least %d second", min)
			return nil, false
		}
		return time.Duration(n) * time.Second, true
	}
}

func boolean(p *parser, key string, v any) (any, bool) { return p.bool(key, v) }

func text(p *parser, key string, v any) (any, bool) { return p.str(key, v) }

// path converts a file name, made absolute against the configuration file's directory.
func path(p *parser, key string, v any) (any, bool) {
	s, ok := p.str(key, v)
	return p.resolve(s), ok
}

// oneOf converts a string that must be one of choices.
func oneOf(choices ...string) conv {
	return func(p *parser, key string, v any) (any, bool) {
		s, ok := p.str(key, v)
		if !ok {
			return nil, false
		}
		for _, c := range choices {
			if s == c {
				return s, true
			}
		}
		q := make([]string, len(choices))
		for i, c := range choices {
			q[i] = fmt.Sprintf("%q", c)
		}
		want := q[0]
		if len(q) > 1 {
			want = strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
		}
		p.errf(key, "%q: want %s", s, want)
		return nil, false
	}
}

// list converts an array of strings with each, which reports its own errors.
func list[T any](each func(p *parser, key string, in []string) []T) conv {
	return func(p *parser, key string, v any) (any, bool) {
		in, ok := p.strs(key, v)
		if !ok {
			return nil, false
		}
		n := len(p.errs)
		out := each(p, key, in)
		return out, len(p.errs) == n
	}
}
