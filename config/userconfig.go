package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"
)

// maxUserFileSize bounds a per-user or per-group file.
const maxUserFileSize = 64 << 10

// UserConfig is the configuration of one session: the global values, overridden by the user's group file and then
// by the user's own file (ocserv's order).
//
// Lists (route, no_route, dns, nbns, split_dns, iroute) follow ocserv (src/sup-config/file.c, apply_default_config in
// src/main-sec-mod-cmd.c): the lines of the group file and of the user file add up to one list, and when either
// file sets the key at all, that list replaces the global one (iroute has none); it is not merged with it. So a
// user file with `route = ["10.5.0.0/16"]` gives that user exactly 10.5.0.0/16 (plus the group file's routes)
// whatever the global route says, and `route = []` gives a full tunnel. The other keys are single values: the
// user file wins over the group file, which wins over the global file. (ocserv's global append-routes, which adds
// the global routes to per-user ones, is not implemented.) The lists are the session's own copies.
type UserConfig struct {
	Routes   []netip.Prefix // route; same syntax as the global key (incl. "default"); empty = everything
	NoRoutes []netip.Prefix // no_route
	IRoutes  []netip.Prefix // iroute: networks behind this client (per-user and per-group files only)
	DNS      []netip.Addr   // dns, ipv4_dns, ipv6_dns; empty = the server answers DNS itself, as globally
	NBNS     []netip.Addr   // nbns, ipv4_nbns, ipv6_nbns
	SplitDNS []string       // split_dns

	TunnelAllDNS bool   // tunnel_all_dns
	NoUDP        bool   // no_udp: no DTLS for this session
	DenyRoaming  bool   // deny_roaming: the cookie works only from the address that logged in
	MTU          int    // mtu; 0 = 1500
	Hostname     string // hostname (per-user and per-group files only): sent instead of the client's; "" = echo it

	// RestrictToRoutes (restrict_user_to_routes) limits the session to destinations inside Routes and outside
	// NoRoutes; with a default route, only NoRoutes are refused (ocserv's sample.config).
	RestrictToRoutes bool
	// ClientToClient (client_to_client, an ocgate key) lets the session reach other sessions' addresses (their
	// pool addresses and iroutes).
	ClientToClient bool
	// Ports (restrict_user_to_ports) restricts the destination ports the session may reach. Like ocserv, the group
	// file's and the user file's entries add up to one list, which replaces the global one when it is not empty
	// (so a per-user file can replace the global restriction but not lift it), and a "!(...)" list in either file
	// makes every entry a denied one (with a warning).
	Ports PortRules

	RxDataPerSec, TxDataPerSec int // rx_data_per_sec, tx_data_per_sec: bytes/s; 0 = unlimited

	IdleTimeout, MobileIdleTimeout, SessionTimeout time.Duration // 0 = none
	DPD, MobileDPD, Keepalive                      time.Duration

	// IPv4Network and IPv6Network (ipv4_network, ipv6_network) are the pools the session's addresses come from:
	// the global ones unless a per-user or per-group file names its own. IPv6Network is invalid without IPv6.
	IPv4Network, IPv6Network netip.Prefix

	// ExplicitIPv4 (explicit_ipv4) is the fixed address of this user; the zero Addr means one from the pool. It is
	// inside IPv4Network and is none of its network, broadcast and server (first usable) addresses.
	ExplicitIPv4 netip.Addr
	// ExplicitIPv6 (explicit_ipv6) is the fixed IPv6 address of this user; the zero Addr means one from the pool.
	// It is a client address of IPv6Network (explicitIPv6).
	ExplicitIPv6 netip.Addr

	MaxSameClients int // max_same_clients; 0 = unlimited

	Files    []string // the files that were applied, in order, for logs
	Warnings []string // "FILE:LINE: KEY: ..." for keys accepted but ignored or not implemented per user yet
}

// userLists accumulates the list keys over the group and user files: ocserv appends both files' lines to one list,
// which replaces the global list when either file set the key.
type userLists struct {
	routes, noRoutes               []netip.Prefix
	dns, nbns                      []netip.Addr
	splitDNS                       []string
	setRoutes, setNoRoutes, setDNS bool
	setNBNS, setSplitDNS           bool
	ports                          PortRules // restrict_user_to_ports: replaces the global list when not empty
}

// UserConfig returns the configuration of a session of user, whose groups are groups. groups[0] is the session's
// group: the one the user selected, else the first the user belongs to; like ocserv, only that group's file is read.
//
// The group file is config_per_group/GROUP, or default_group_config when that file does not exist (and only if
// the session has a group); the user file is config_per_user/USER, or default_user_config when that file does not
// exist. A missing directory or file is no override. The files are read at each call, so edits apply to the next
// login. A name that is empty, contains '/', '\' or NUL, or starts with '.' is refused when it would become a path.
// A file that cannot be read (other than missing), is too large, or has an error refuses the session: ocserv
// (since 1.5.1) does the same rather than apply a configuration without the administrator's restrictions.
//
// With expose_iroutes, the iroutes of every file in config_per_user except the session's own are added to Routes,
// unless Routes is empty (everything already goes through the tunnel). Files with errors are skipped there;
// CheckUserConfigs reports them.
func (c *Config) UserConfig(user string, groups []string) (*UserConfig, error) {
	group := ""
	if len(groups) > 0 {
		group = groups[0]
	}
	uc := c.baseUserConfig()
	var l userLists
	var errs []error
	if c.ConfigPerGroup != "" && group != "" {
		errs = append(errs, c.applyUserFile(uc, &l, "group", c.ConfigPerGroup, group, c.DefaultGroupConfig))
	}
	if c.ConfigPerUser != "" {
		errs = append(errs, c.applyUserFile(uc, &l, "user", c.ConfigPerUser, user, c.DefaultUserConfig))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := c.checkExplicit(uc); err != nil { // a group file's network against the user file's address
		return nil, fmt.Errorf("%s: %w", strings.Join(uc.Files, ", "), err)
	}
	if l.setRoutes {
		uc.Routes = l.routes
	}
	if l.setNoRoutes {
		uc.NoRoutes = l.noRoutes
	}
	if l.setDNS {
		uc.DNS = l.dns
	}
	if l.setNBNS {
		uc.NBNS = l.nbns
	}
	if l.setSplitDNS {
		uc.SplitDNS = l.splitDNS
	}
	if !l.ports.Empty() {
		uc.Ports = l.ports
	}
	if c.ExposeIRoutes && c.ConfigPerUser != "" && len(uc.Routes) > 0 {
		for _, r := range c.knownIRoutes() {
			if !slices.Contains(uc.IRoutes, r) && !slices.Contains(uc.Routes, r) {
				uc.Routes = append(uc.Routes, r)
			}
		}
	}
	return uc, nil
}

// baseUserConfig is the configuration of a session without per-user or per-group files.
func (c *Config) baseUserConfig() *UserConfig {
	return &UserConfig{
		IPv4Network:       c.IPv4Network,
		IPv6Network:       c.IPv6Network,
		Routes:            slices.Clone(c.Routes),
		NoRoutes:          slices.Clone(c.NoRoutes),
		DNS:               slices.Clone(c.DNS),
		NBNS:              slices.Clone(c.NBNS),
		SplitDNS:          slices.Clone(c.SplitDNS),
		TunnelAllDNS:      c.TunnelAllDNS,
		NoUDP:             c.NoUDP,
		DenyRoaming:       c.DenyRoaming,
		MTU:               c.MTU,
		RestrictToRoutes:  c.RestrictUserToRoutes,
		ClientToClient:    c.ClientToClient,
		Ports:             c.RestrictUserToPorts.clone(),
		RxDataPerSec:      c.RxDataPerSec,
		TxDataPerSec:      c.TxDataPerSec,
		IdleTimeout:       c.IdleTimeout,
		MobileIdleTimeout: c.MobileIdleTimeout,
		SessionTimeout:    c.SessionTimeout,
		DPD:               c.DPD,
		MobileDPD:         c.MobileDPD,
		Keepalive:         c.Keepalive,
		MaxSameClients:    c.MaxSameClients,
	}
}

// applyUserFile applies dir/name, or fallback when dir/name does not exist; kind ("user" or "group") names the
// name in errors.
func (c *Config) applyUserFile(uc *UserConfig, l *userLists, kind, dir, name, fallback string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("%s name %q refused for a file in %s: %v", kind, name, dir, err)
	}
	path := filepath.Join(dir, name)
	data, err := readUserFile(path)
	if errors.Is(err, fs.ErrNotExist) && fallback != "" {
		path = fallback
		data, err = readUserFile(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	warns, err := c.parseUserFile(data, path, uc, l)
	if err != nil {
		return err
	}
	uc.Files = append(uc.Files, path)
	uc.Warnings = append(uc.Warnings, warns...)
	return nil
}

// checkName refuses user and group names that could name something other than a file inside the directory.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case strings.HasPrefix(name, "."):
		return errors.New("name starts with '.'")
	case strings.ContainsAny(name, "/\\\x00"):
		return errors.New("name contains '/', '\\' or NUL")
	}
	return nil
}

// readUserFile reads a per-user or per-group file of at most maxUserFileSize bytes. The error wraps
// fs.ErrNotExist when the file (or its directory) does not exist.
func readUserFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not hang the login; the file is then refused as not regular.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxUserFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxUserFileSize {
		return nil, fmt.Errorf("%s: larger than %d KiB", path, maxUserFileSize>>10)
	}
	return data, nil
}

// parseUserFile parses a per-user or per-group file into uc (single values) and l (lists). It returns the
// warnings, or every error of the file.
func (c *Config) parseUserFile(data []byte, path string, uc *UserConfig, l *userLists) ([]string, error) {
	p := newParser(path, "", data)
	md, err := p.decode(data)
	if err != nil {
		return nil, err
	}
	p.sortKeys(md, true)
	s := &userState{c: c, u: uc, l: l}
	for i := range keyTable {
		k := &keyTable[i]
		v, ok := p.vals[k.name]
		switch {
		case !ok || k.scope == global || !k.perUserApplied():
		case k.user != nil:
			k.user(p, s, v)
		default:
			if x, ok := k.conv(p, k.name, v); ok {
				reflect.ValueOf(uc).Elem().FieldByName(k.userField).Set(reflect.ValueOf(x))
			}
		}
	}
	if err := c.checkExplicit(uc); err != nil {
		switch {
		case uc.ExplicitIPv6.IsValid() && strings.HasPrefix(err.Error(), "explicit_ipv6"):
			p.errf("explicit_ipv6", "%s", strings.TrimPrefix(err.Error(), "explicit_ipv6: "))
		default:
			p.errf("explicit_ipv4", "%s", strings.TrimPrefix(err.Error(), "explicit_ipv4: "))
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return p.warns, nil
}

// checkExplicit checks the fixed addresses against the session's pools.
func (c *Config) checkExplicit(uc *UserConfig) error {
	if a := uc.ExplicitIPv4; a.IsValid() {
		if _, err := explicitIPv4(a.String(), uc.IPv4Network); err != nil {
			return fmt.Errorf("explicit_ipv4: %q: %w", a, err)
		}
	}
	if a := uc.ExplicitIPv6; a.IsValid() {
		if err := explicitIPv6(a, uc.IPv6Network, c.IPv6SubnetPrefix); err != nil {
			return fmt.Errorf("explicit_ipv6: %q: %w", a, err)
		}
	}
	return nil
}

// explicitIPv6 checks a fixed IPv6 address against the pool pool, whose clients get /sub prefixes: a must be
// a client's address there (the prefix's first address, or its ::1 when the prefix is wider than one address),
// outside the server's own prefix.
func explicitIPv6(a netip.Addr, pool netip.Prefix, sub int) error {
	if !pool.IsValid() {
		return errors.New("no ipv6_network")
	}
	if !pool.Contains(a) {
		return fmt.Errorf("outside ipv6_network %s", pool)
	}
	block := netip.PrefixFrom(a, sub).Masked()
	client := block.Addr()
	if sub < 128 {
		client = client.Next()
	}
	if a != client {
		return fmt.Errorf("with ipv6_subnet_prefix %d a client's address is its prefix's ::1 (%s)", sub, client)
	}
	gw := pool.Masked().Addr().Next()
	if block.Contains(gw) || block.Contains(pool.Masked().Addr()) {
		return fmt.Errorf("the server's own prefix in ipv6_network %s", pool)
	}
	return nil
}

// explicitIPv4 checks a fixed address against the pool: inside it, and none of its network address, its
// broadcast address and the server's own address (the first usable one).
func explicitIPv4(s string, pool netip.Prefix) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Unmap().Is4() {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	a = a.Unmap()
	if !pool.Contains(a) {
		return netip.Addr{}, fmt.Errorf("outside ipv4_network %s", pool)
	}
	network := pool.Masked().Addr()
	b := network.As4()
	host := uint32(1)<<(32-pool.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	broadcast := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	switch a {
	case network:
		return netip.Addr{}, fmt.Errorf("the network address of ipv4_network %s", pool)
	case broadcast:
		return netip.Addr{}, fmt.Errorf("the broadcast address of ipv4_network %s", pool)
	case network.Next():
		return netip.Addr{}, fmt.Errorf("the server's own address in ipv4_network %s", pool)
	}
	return a, nil
}

// knownIRoutes are the iroutes of every file in config_per_user (ocserv's expose-iroutes reads that directory
// only). Files that cannot be read or parsed are skipped.
func (c *Config) knownIRoutes() []netip.Prefix {
	entries, err := os.ReadDir(c.ConfigPerUser)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, e := range entries {
		if checkName(e.Name()) != nil {
			continue
		}
		path := filepath.Join(c.ConfigPerUser, e.Name())
		data, err := readUserFile(path)
		if err != nil {
			continue
		}
		uc := c.baseUserConfig()
		if _, err := c.parseUserFile(data, path, uc, &userLists{}); err != nil {
			continue
		}
		for _, r := range uc.IRoutes {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// UserNetworks are the pools that per-user and per-group files (and default_user_config, default_group_config)
// name with ipv4_network or ipv6_network, other than the global ones, sorted: the datapaths serve them from the
// start, and a login naming another one (a file edited since) is refused until the server restarts. Files that
// cannot be read or parsed are skipped (CheckUserConfigs reports them).
func (c *Config) UserNetworks() []netip.Prefix {
	var out []netip.Prefix
	add := func(path string) {
		data, err := readUserFile(path)
		if err != nil {
			return
		}
		uc := c.baseUserConfig()
		if _, err := c.parseUserFile(data, path, uc, &userLists{}); err != nil {
			return
		}
		for _, n := range []netip.Prefix{uc.IPv4Network, uc.IPv6Network} {
			if n.IsValid() && n != c.IPv4Network && n != c.IPv6Network && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	for _, dir := range []string{c.ConfigPerUser, c.ConfigPerGroup} {
		if dir == "" {
			continue
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if checkName(e.Name()) == nil {
				add(filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, path := range []string{c.DefaultUserConfig, c.DefaultGroupConfig} {
		if path != "" {
			add(path)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		return a.Addr().Compare(b.Addr())
	})
	return out
}

// CheckUserConfigs parses every file in config_per_user and config_per_group, and default_user_config and
// default_group_config, as UserConfig would at a login, for `ocgate config check`. Missing directories and files
// are not errors (UserConfig treats them as no override); entries whose names start with '.' are skipped (UserConfig
// never looks them up). It also warns when two users have the same explicit_ipv4. Every error and warning names
// the file, and the line and key when the problem is inside the file.
func (c *Config) CheckUserConfigs() (warnings []string, errs []error) {
	explicit := map[netip.Addr]string{} // explicit_ipv4 → the per-user file that set it
	check := func(path string, perUser bool) {
		data, err := readUserFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			errs = append(errs, err)
			return
		}
		uc := c.baseUserConfig()
		warns, err := c.parseUserFile(data, path, uc, &userLists{})
		if err != nil {
			errs = append(errs, err)
			return
		}
		warnings = append(warnings, warns...)
		if a := uc.ExplicitIPv4; perUser && a.IsValid() {
			if other, ok := explicit[a]; ok {
				warnings = append(warnings, fmt.Sprintf("%s: explicit_ipv4: %s is also the address of %s; "+
					"only one of them can be connected at a time", path, a, other))
			} else {
				explicit[a] = path
			}
		}
	}
	for _, d := range []struct {
		dir     string
		perUser bool
	}{{c.ConfigPerUser, true}, {c.ConfigPerGroup, false}} {
		if d.dir == "" {
			continue
		}
		entries, err := os.ReadDir(d.dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				check(filepath.Join(d.dir, e.Name()), d.perUser)
			}
		}
	}
	if c.DefaultUserConfig != "" {
		check(c.DefaultUserConfig, false)
	}
	if c.DefaultGroupConfig != "" {
		check(c.DefaultGroupConfig, false)
	}
	if err := PoolsOverlap(append([]netip.Prefix{c.IPv4Network, c.IPv6Network}, c.UserNetworks()...)); err != nil {
		errs = append(errs, err)
	}
	return warnings, errs
}

// PoolsOverlap reports two different pools of which one contains the other: both would lease the same addresses.
func PoolsOverlap(pools []netip.Prefix) error {
	for i, a := range pools {
		for _, b := range pools[i+1:] {
			if a.IsValid() && b.IsValid() && a != b && a.Overlaps(b) {
				return fmt.Errorf("the address pools %s and %s overlap (ipv4_network, ipv6_network in the "+
					"configuration and in per-user and per-group files)", a, b)
			}
		}
	}
	return nil
}
