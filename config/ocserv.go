package config

// Reading ocserv's own configuration format, for `ocgate config import` and for telling an ocserv file apart from a
// broken TOML file. The format is an INI file as ocserv reads it (its bundled inih, then sanitize_config_value):
//
//	# comment                a line starting with '#' or ';' (after blanks) is a comment
//	key = value              leading and trailing blanks and double quotes of the value are removed:
//	                         `banner = "Hi"` and `banner = Hi` are the same; nothing inside is unescaped
//	route = a                a key given again adds a value (lists) or replaces it (single values)
//	route = b
//	[vhost:name]             a virtual host: the keys after it, to the next section, are that host's
//
// Keys use '-' where ocgate's use '_'.

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ocservLine is one `key = value` line of an ocserv file.
type ocservLine struct {
	line    int    // 1-based
	key     string // as written, e.g. "ipv4-network"
	value   string // sanitized: blanks and double quotes at both ends removed
	section string // "" for the global part, else the section's name, e.g. "vhost:www.example.com"
}

// ocservErr is a line of an ocserv file that is not `key = value`, a comment or a section.
type ocservErr struct {
	line int
	msg  string
}

// parseOcserv splits an ocserv file into its key lines; lines it cannot read are returned as errors (ocserv
// refuses such a file).
func parseOcserv(data []byte) (lines []ocservLine, errs []ocservErr) {
	section := ""
	for i, l := range strings.Split(string(data), "\n") {
		n := i + 1
		l = strings.TrimSpace(strings.TrimSuffix(l, "\r"))
		if i == 0 {
			l = strings.TrimPrefix(l, "\uFEFF")
		}
		switch {
		case !utf8.ValidString(l):
			errs = append(errs, ocservErr{n, "not valid UTF-8"})
			continue
		case l == "" || l[0] == '#' || l[0] == ';':
			continue
		case l[0] == '[':
			name, ok := strings.CutSuffix(l, "]")
			if !ok {
				errs = append(errs, ocservErr{n, "section header without ']'"})
				continue
			}
			section = strings.TrimSpace(name[1:])
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			errs = append(errs, ocservErr{n, fmt.Sprintf("%.40q: want key = value", l)})
			continue
		}
		lines = append(lines, ocservLine{line: n, key: k, value: sanitizeOcserv(v), section: section})
	}
	return lines, errs
}

// sanitizeOcserv removes blanks and double quotes at both ends of a value, as ocserv does.
func sanitizeOcserv(v string) string {
	return strings.Trim(v, " \t\r\n\v\f\"")
}

// ocservName turns ocserv's key name into ocgate's.
func ocservName(k string) string { return strings.ReplaceAll(k, "-", "_") }

// looksLikeOcserv reports whether data is in ocserv's format rather than TOML: some key is written with '-' and
// is an ocgate key once '-' is '_' (`tcp-port = 443`), or a key ocgate knows has a value no TOML value starts
// like (`run_as_user = ocserv`) in a file TOML cannot read. It returns the first such line.
func looksLikeOcserv(data []byte, tomlFailed bool) (line int, ok bool) {
	lines, _ := parseOcserv(data)
	for _, l := range lines {
		name := ocservName(l.key)
		if keyByName[name] == nil {
			continue
		}
		if name != l.key {
			return l.line, true
		}
	}
	if !tomlFailed {
		return 0, false
	}
	n := 0
	for _, l := range lines {
		if keyByName[l.key] != nil && unquotedTOML(rawValue(data, l.line)) {
			n++
			if n >= 3 { // one or two are typos in a TOML file; the quoting error says how to fix them
				return lines[0].line, true
			}
		}
	}
	return 0, false
}

// rawValue is what follows the first '=' of line n (1-based) of data, trimmed.
func rawValue(data []byte, n int) string {
	ls := strings.Split(string(data), "\n")
	if n < 1 || n > len(ls) {
		return ""
	}
	_, v, _ := strings.Cut(ls[n-1], "=")
	return strings.TrimSpace(v)
}

// unquotedTOML reports whether a value, as written, is no TOML value: not quoted, not an array or table, not a
// number or boolean.
func unquotedTOML(v string) bool {
	if v == "" {
		return false
	}
	switch v[0] {
	case '"', '\'', '[', '{':
		return false
	}
	if v == "true" || v == "false" {
		return false
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c == '_' || c == '-' || c == '+') {
			return true
		}
	}
	return false
}
