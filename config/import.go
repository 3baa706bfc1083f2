package config

// `ocgate config import`: an ocserv configuration (ocserv.go reads it) written as ocgate's TOML with the same
// settings, the per-user and per-group directories converted alongside, and a report of every key carried over,
// every key left out and why, and every behaviour that differs from ocserv's with that file.

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ImportOptions says where the converted per-user and per-group files go. Empty: they are not converted, and
// config_per_user / config_per_group are left out (with a note) since ocgate cannot read ocserv's files.
type ImportOptions struct {
	UserDir  string // directory for config_per_user's converted files (and default_user_config's, as .default)
	GroupDir string // the same for config_per_group (and default_group_config)
}

// Imported is the result of an import: the TOML, the converted per-user and per-group files, and the report.
type Imported struct {
	TOML []byte
	// Files maps each converted per-user or per-group file's path (under ImportOptions.UserDir or GroupDir) to its
	// TOML.
	Files map[string][]byte

	Carried []string // "LINE: key: ..." keys written to the TOML
	Ignored []string // keys left out, with why
	Differs []string // behaviours that differ from ocserv's with this file
}

// Report renders the report, one section per kind.
func (im *Imported) Report() string {
	var b strings.Builder
	for _, s := range []struct {
		title string
		items []string
	}{
		{"carried over", im.Carried},
		{"left out", im.Ignored},
		{"behaves differently from ocserv", im.Differs},
	} {
		fmt.Fprintf(&b, "%s (%d):\n", s.title, len(s.items))
		for _, it := range s.items {
			fmt.Fprintf(&b, "  %s\n", it)
		}
	}
	return b.String()
}

// valueKind is the TOML type a key takes, read from its default (or example) in the key table.
type valueKind uint8

const (
	kindString valueKind = iota
	kindList
	kindInt
	kindBool
)

func kindOf(k *key) valueKind {
	v := k.def
	if v == "" {
		v = k.ex
	}
	switch {
	case strings.HasPrefix(v, "["):
		return kindList
	case v == "true" || v == "false":
		return kindBool
	case v != "" && (v[0] >= '0' && v[0] <= '9' || v[0] == '-'):
		return kindInt
	}
	return kindString
}

// importer converts the lines of one ocserv file.
type importer struct {
	im     *Imported
	file   string // for the report: "" for the main file, the per-user file's name otherwise
	perUse bool   // a per-user or per-group file
	order  []string
	vals   map[string][]string // ocgate key → its values, in the file's order
	lines  map[string]int      // ocgate key → its first line
	orig   map[string]string   // ocgate key → ocserv's spelling
	out    map[string]string   // ocgate key → its TOML value
	notes  map[string]string   // ocgate key → a comment written above it
	left   []string            // commented-out lines for the keys left out
}

func (m *importer) carry(line int, name, format string, args ...any) {
	m.im.Carried = append(m.im.Carried, m.where(line)+name+": "+fmt.Sprintf(format, args...))
}

// uncarry takes back the report's "carried over" line of a key whose value is replaced.
func (m *importer) uncarry(name string) {
	m.im.Carried = slices.DeleteFunc(m.im.Carried, func(s string) bool {
		return strings.HasPrefix(s, m.where(m.lines[name])+name+": ")
	})
}

func (m *importer) ignore(line int, name, raw, format string, args ...any) {
	why := fmt.Sprintf(format, args...)
	m.im.Ignored = append(m.im.Ignored, m.where(line)+name+": "+why)
	m.left = append(m.left, oneLine(fmt.Sprintf("# %s = %s  (%s)", name, raw, why)))
}

func (m *importer) differ(line int, name, format string, args ...any) {
	m.im.Differs = append(m.im.Differs, m.where(line)+name+": "+fmt.Sprintf(format, args...))
}

func (m *importer) where(line int) string {
	if m.file != "" {
		return fmt.Sprintf("%s:%d: ", m.file, line)
	}
	return fmt.Sprintf("%d: ", line)
}

// oneLine makes s fit in a TOML comment: control characters other than tab become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// Import converts an ocserv configuration. path names it in errors; the files its config-per-user and
// config-per-group name are read from disk when opt asks for them to be converted.
func Import(data []byte, path string, opt ImportOptions) (*Imported, error) {
	lines, perrs := parseOcserv(data)
	if len(perrs) > 0 {
		errs := make([]error, len(perrs))
		for i, e := range perrs {
			errs[i] = fmt.Errorf("%s:%d: %s", path, e.line, e.msg)
		}
		return nil, errors.Join(errs...)
	}
	im := &Imported{Files: map[string][]byte{}}
	m := newImporter(im, "", false)
	vhosts := map[string]int{}
	for _, l := range lines {
		if l.section != "" {
			if vhosts[l.section] == 0 {
				im.Ignored = append(im.Ignored, fmt.Sprintf("%d: [%s]: sections (virtual hosts) are not supported; "+
					"every key of the section is left out", l.line, l.section))
			}
			vhosts[l.section]++
			continue
		}
		m.add(l)
	}
	m.convert()
	m.global(opt)
	if err := m.userDirs(opt, path); err != nil {
		return nil, err
	}
	im.TOML = m.render(fmt.Sprintf("# Converted from %s by `ocgate config import`.", path))
	return im, nil
}

func newImporter(im *Imported, file string, perUser bool) *importer {
	return &importer{im: im, file: file, perUse: perUser, vals: map[string][]string{}, lines: map[string]int{},
		out: map[string]string{}, notes: map[string]string{}, orig: map[string]string{}}
}

// add records one line; the keys are converted once every line is read (repeated keys make one list).
func (m *importer) add(l ocservLine) {
	name := ocservName(l.key)
	if _, seen := m.vals[name]; !seen {
		m.order = append(m.order, name)
		m.lines[name] = l.line
		m.orig[name] = l.key
	}
	m.vals[name] = append(m.vals[name], l.value)
}

// convert turns every recorded key into its TOML value, or leaves it out with a reason.
func (m *importer) convert() {
	for _, name := range m.order {
		vals, line := m.vals[name], m.lines[name]
		raw := vals[len(vals)-1]
		k := keyByName[name]
		switch {
		case k == nil:
			m.ignore(line, name, raw, "unknown to ocgate")
			continue
		case k.status == notYet:
			m.ignore(line, name, raw, "not implemented by ocgate yet")
			continue
		case k.status == ignored:
			m.ignore(line, name, raw, "%s", k.why)
			continue
		case m.perUse && k.scope == global:
			m.ignore(line, name, raw, "not allowed in a per-user or per-group file")
			continue
		case !m.perUse && k.scope == userOnly:
			m.ignore(line, name, raw, "only allowed in per-user and per-group files")
			continue
		}
		if name == "auth" {
			vals = m.auths(line, vals)
			if len(vals) == 0 {
				continue
			}
		}
		kind := kindOf(k)
		if kind != kindList && len(vals) > 1 {
			m.differ(line, name, "set %d times; ocserv and ocgate take the last value, %q", len(vals), raw)
		}
		switch kind {
		case kindList:
			q := make([]string, len(vals))
			for i, v := range vals {
				q[i] = tomlString(v)
			}
			m.out[name] = "[" + strings.Join(q, ", ") + "]"
		case kindInt:
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil {
				m.ignore(line, name, raw, "%q is not a whole number", raw)
				continue
			}
			m.out[name] = strconv.FormatInt(n, 10)
		case kindBool:
			b, ok := ocservBool(raw)
			if !ok {
				m.ignore(line, name, raw, "%q is not true or false", raw)
				continue
			}
			m.out[name] = strconv.FormatBool(b)
		default:
			m.out[name] = tomlString(raw)
		}
		if o := m.orig[name]; o != name {
			m.carry(line, name, "%s (ocserv's %s)", m.out[name], o)
		} else {
			m.carry(line, name, "%s", m.out[name])
		}
	}
}

// ocservBool reads a boolean as ocserv does (true/yes, false/no, any case).
func ocservBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "true", "yes":
		return true, true
	case "false", "no":
		return false, true
	}
	return false, false
}

// auths keeps the auth methods ocgate supports, in ocgate's syntax (plain[/path] becomes plain[passwd=/path]).
func (m *importer) auths(line int, vals []string) []string {
	var out []string
	for _, v := range vals {
		a, err := parseAuth(v)
		if err != nil {
			m.ignore(line, "auth", tomlString(v), "%v; without a supported auth line ocgate uses its generated user", err)
			continue
		}
		out = append(out, "plain[passwd="+a.Params["passwd"]+"]")
	}
	return out
}

// global adds the global file's notes: the datapath, a DNS server that is the pool's own address, and the
// per-user and per-group directories.
func (m *importer) global(opt ImportOptions) {
	m.im.Differs = append(m.im.Differs, "datapath: ocserv routes through kernel TUN devices; ocgate's default is its "+
		"in-process network stack (no root, no TUN); set datapath = \"tun\" to keep ocserv's behaviour")
	if _, ok := m.out["datapath"]; !ok {
		m.notes["datapath"] = "ocserv uses kernel TUN devices; ocgate's default is \"netstack\"."
		m.out["datapath"] = `"netstack"`
		m.order = append([]string{"datapath"}, m.order...)
	}
	m.poolDNS()
	for _, d := range []struct{ key, dir, flag, def string }{
		{"config_per_user", opt.UserDir, "--user-dir", "default_user_config"},
		{"config_per_group", opt.GroupDir, "--group-dir", "default_group_config"},
	} {
		for _, k := range []string{d.key, d.def} {
			if _, ok := m.out[k]; ok && d.dir == "" {
				raw := m.vals[k][len(m.vals[k])-1]
				delete(m.out, k)
				m.uncarry(k)
				m.ignore(m.lines[k], k, tomlString(raw), "its files are in ocserv's format: run the import with %s DIR "+
					"to convert them", d.flag)
			}
		}
	}
}

// poolDNS handles a dns entry that is the server's own in-pool address (Debian's sample: the pool 192.168.1.0/24
// and dns = 192.168.1.1): ocserv leaves DNS to a resolver the administrator runs there; ocgate answers DNS itself
// at that address only when dns is empty, so the entry is dropped.
func (m *importer) poolDNS() {
	vals, ok := m.vals["dns"]
	if !ok || m.out["dns"] == "" {
		return
	}
	c, err := Parse([]byte(m.keyLines("ipv4_network", "ipv4_netmask")), "import")
	if err != nil {
		return
	}
	gw := c.IPv4Network.Masked().Addr().Next()
	var keep []string
	for _, v := range vals {
		if a, err := netip.ParseAddr(v); err == nil && a == gw {
			m.differ(m.lines["dns"], "dns", "%s is the server's own address in the pool; ocgate answers DNS there "+
				"itself (forwarding to dns_upstream, else the host's resolver) when dns is empty, so it was left out "+
				"(with datapath = \"tun\", run a resolver on that address as with ocserv and set dns again)", v)
			continue
		}
		keep = append(keep, tomlString(v))
	}
	if len(keep) == 0 {
		m.notes["dns"] = "dns = [" + tomlString(gw.String()) + "] was ocserv's: ocgate answers DNS itself at that address."
		m.out["dns"] = "[]"
		return
	}
	m.out["dns"] = "[" + strings.Join(keep, ", ") + "]"
}

// keyLines renders the converted keys named as TOML lines.
func (m *importer) keyLines(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		if v, ok := m.out[n]; ok {
			fmt.Fprintf(&b, "%s = %s\n", n, v)
		}
	}
	return b.String()
}

// userDirs converts the per-user and per-group directories (and the default files) into opt's directories.
func (m *importer) userDirs(opt ImportOptions, path string) error {
	for _, d := range []struct{ key, def, dir string }{
		{"config_per_user", "default_user_config", opt.UserDir},
		{"config_per_group", "default_group_config", opt.GroupDir},
	} {
		if d.dir == "" {
			continue
		}
		src := m.lastVal(d.key)
		if src == "" && m.lastVal(d.def) == "" {
			continue
		}
		if src != "" {
			entries, err := os.ReadDir(src)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: %s: %w", path, d.key, err)
			}
			for _, e := range entries {
				if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
					continue
				}
				if err := m.userFile(filepath.Join(src, e.Name()), filepath.Join(d.dir, e.Name())); err != nil {
					return err
				}
			}
			m.out[d.key] = tomlString(d.dir)
			m.uncarry(d.key)
			m.carry(m.lines[d.key], d.key, "%s (converted from %s)", tomlString(d.dir), src)
		} else {
			m.out[d.key] = tomlString(d.dir)
		}
		if def := m.lastVal(d.def); def != "" {
			to := filepath.Join(d.dir, ".default")
			if err := m.userFile(def, to); err != nil {
				return err
			}
			m.out[d.def] = tomlString(to)
		}
	}
	return nil
}

func (m *importer) lastVal(name string) string {
	if _, ok := m.out[name]; !ok {
		return ""
	}
	v := m.vals[name]
	return v[len(v)-1]
}

// userFile converts one per-user or per-group file.
func (m *importer) userFile(from, to string) error {
	data, err := readUserFile(from)
	if err != nil {
		return err
	}
	lines, perrs := parseOcserv(data)
	if len(perrs) > 0 {
		return fmt.Errorf("%s:%d: %s", from, perrs[0].line, perrs[0].msg)
	}
	u := newImporter(m.im, from, true)
	for _, l := range lines {
		u.add(l)
	}
	u.convert()
	m.im.Files[to] = u.render(fmt.Sprintf("# Converted from %s by `ocgate config import`.", from))
	return nil
}

// render writes the TOML: the converted keys in the file's order, then the keys left out, commented.
func (m *importer) render(header string) []byte {
	var b strings.Builder
	b.WriteString(header + "\n\n")
	for _, name := range m.order {
		v, ok := m.out[name]
		if !ok {
			continue
		}
		if n := m.notes[name]; n != "" {
			fmt.Fprintf(&b, "# %s\n", n)
		}
		fmt.Fprintf(&b, "%s = %s\n", name, v)
	}
	for _, name := range []string{"config_per_user", "default_user_config", "config_per_group", "default_group_config"} {
		if v, ok := m.out[name]; ok && !slices.Contains(m.order, name) {
			fmt.Fprintf(&b, "%s = %s\n", name, v)
		}
	}
	if len(m.left) > 0 {
		b.WriteString("\n# Left out (see the import report):\n")
		for _, l := range m.left {
			b.WriteString(l + "\n")
		}
	}
	return []byte(b.String())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
