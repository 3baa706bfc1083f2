package config

// Checks across keys, after every key of the file is applied: keys that need another key, keys kept without
// effect (inert), and keys the chosen datapath does not use.

import (
	"net"
	"net/netip"
	"os"
	"os/user"
	"reflect"
	"strconv"
)

// check reports what no single key can see by itself.
func (p *parser) check(c *Config) {
	if c.DefaultUserConfig != "" && c.ConfigPerUser == "" {
		p.warnf("default_user_config", "has no effect without config_per_user")
	}
	if c.DefaultGroupConfig != "" && c.ConfigPerGroup == "" {
		p.warnf("default_group_config", "has no effect without config_per_group")
	}
	if c.ExposeIRoutes && c.ConfigPerUser == "" {
		p.warnf("expose_iroutes", "has no effect without config_per_user")
	}
	p.checkRunAsUser(c)
	d := Default()
	for i := range keyTable {
		k := &keyTable[i]
		f := k.fieldValue(c)
		if !f.IsValid() || reflect.DeepEqual(f.Interface(), k.fieldValue(d).Interface()) {
			continue
		}
		if k.inert != "" {
			p.warnf(k.name, "%s", k.inert)
		}
		if k.netstack && c.Datapath == "tun" {
			p.warnf(k.name, "ignored with datapath = \"tun\" (the kernel carries the flows)")
		}
	}
	p.checkSOCKS5(c)
	p.checkEdge(c)
	p.checkAuth(c)
	p.checkCluster(c)
}

// checkRunAsUser accepts, as ocserv does, a run_as_user that is root or the user the server already runs as: there
// is nothing to drop, so the key is warned about and cleared (no privileged helper either).
func (p *parser) checkRunAsUser(c *Config) {
	if c.RunAsUser == "" {
		return
	}
	u, err := user.Lookup(c.RunAsUser)
	if err != nil || u.Uid != "0" && u.Uid != strconv.Itoa(os.Geteuid()) {
		return
	}
	p.warnf("run_as_user", "%q (uid %s) drops no privileges: the server keeps running as uid %d", c.RunAsUser, u.Uid, os.Geteuid())
	c.RunAsUser = ""
}

// checkSOCKS5 checks socks5_listen, socks5_user and socks5_password together, and against datapath.
func (p *parser) checkSOCKS5(c *Config) {
	switch {
	case c.SOCKS5User != "" && c.SOCKS5Password == "":
		p.errf("socks5_user", "set without socks5_password (set both, or neither for no authentication)")
	case c.SOCKS5User == "" && c.SOCKS5Password != "":
		p.errf("socks5_password", "set without socks5_user (set both, or neither for no authentication)")
	}
	for _, kv := range [][2]string{{"socks5_user", c.SOCKS5User}, {"socks5_password", c.SOCKS5Password}} {
		if len(kv[1]) > 255 {
			p.errf(kv[0], "longer than 255 bytes (the SOCKS5 limit)")
		}
	}
	if c.SOCKS5Listen == "" {
		if c.SOCKS5User != "" && c.SOCKS5Password != "" {
			p.warnf("socks5_user", "has no effect without socks5_listen")
		}
		return
	}
	if c.Datapath == "tun" {
		p.warnf("socks5_listen", "ignored with datapath = \"tun\": the host reaches the clients' addresses through the kernel's routes")
		return
	}
	host, _, _ := net.SplitHostPort(c.SOCKS5Listen)
	if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() && c.SOCKS5User == "" {
		p.warnf("socks5_listen", "%s is not a loopback address and socks5_user is not set: whoever reaches it reaches the VPN clients", host)
	}
}
