// Package tun is the kernel-TUN datapath (Linux; tun_other.go fails elsewhere): one TUN device per session, the
// kernel forwarding, egress's decision applied per packet before the device.
package tun

// The platform-neutral part: what a session's device looks like and who creates it.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"ocgate/egress"
	"strings"
)

// DeviceRequest describes one session's point-to-point TUN device.
type DeviceRequest struct {
	Prefix string         // name prefix: "vpns" gives the first free of vpns0, vpns1...
	MTU    int            // link MTU
	Local  netip.Addr     // the server's address on the link (the pool's gateway)
	Peer   netip.Addr     // the client's address
	Local6 netip.Addr     // the server's IPv6 address on the link; invalid: no IPv6
	Peer6  netip.Addr     // the client's IPv6 address (its prefix, if wider, comes as a route)
	Routes []netip.Prefix // networks behind the client (iroute), routed to the device
}

// DeviceOpener creates configured TUN devices and returns the device's file descriptor (the caller owns it; the
// kernel removes the device, its addresses and routes when the last descriptor closes) and its name.
type DeviceOpener interface {
	OpenDevice(ctx context.Context, r DeviceRequest) (fd int, name string, err error)
}

// policy is the egress policy of the kernel-TUN datapath: the kernel forwards, so only the session's facts
// apply (restrict_user_to_routes, client_to_client, restrict_user_to_ports), not the host-socket rules.
func (c Config) policy() *egress.Policy {
	gws := []netip.Addr{c.Local, c.Local6}
	for _, n := range c.UserPools {
		gws = append(gws, Gateway(n))
	}
	return egress.NewPolicy(egress.Config{Pools: append([]netip.Prefix{c.Pool, c.Pool6}, c.UserPools...),
		ClientBits6: c.ClientBits6, Gateways: gws})
}

// Gateway is the server's address in a client network: its first usable address.
func Gateway(n netip.Prefix) netip.Addr { return n.Masked().Addr().Next() }

// Locals returns the server's addresses on the device of a client with addresses peer and peer6: the gateways of
// the pools holding them (the main pools first).
func (c Config) Locals(peer, peer6 netip.Addr) (local, local6 netip.Addr) {
	local, local6 = c.Local, c.Local6
	for _, n := range c.UserPools {
		if !c.Pool.Contains(peer) && n.Contains(peer) {
			local = Gateway(n)
		}
		if peer6.IsValid() && !c.Pool6.Contains(peer6) && n.Contains(peer6) {
			local6 = Gateway(n)
		}
	}
	return local, local6
}

// Config configures the kernel-TUN datapath.
type Config struct {
	Prefix string     // device name prefix (config "device"), e.g. "vpns"
	Local  netip.Addr // the server's address on every device: the pool's gateway
	Local6 netip.Addr // and its IPv6 address (the IPv6 pool's gateway); invalid: IPv4 only
	// Pool and Pool6 are the client address pools, ClientBits6 the length of each client's IPv6 prefix (0: 128):
	// packets to another client's address pass only as the policy says (client_to_client).
	Pool, Pool6 netip.Prefix
	ClientBits6 int
	// UserPools are more client networks, IPv4 or IPv6 (ipv4_network, ipv6_network in per-user and per-group
	// files): a client's device there has that network's Gateway as the server's address.
	UserPools []netip.Prefix
	Opener    DeviceOpener // nil: LocalOpener (this process needs CAP_NET_ADMIN)
	Logger    *slog.Logger // nil: slog.Default()
}

// maxPrefixLen leaves room in IFNAMSIZ (16 with the NUL) for up to four digits.
const maxPrefixLen = 11

func (r DeviceRequest) validate() error {
	if r.Prefix == "" || len(r.Prefix) > maxPrefixLen || strings.ContainsAny(r.Prefix, "%/ \t\n:") {
		return fmt.Errorf("device prefix %q: want up to %d characters, no '%%', '/', ':' or spaces", r.Prefix, maxPrefixLen)
	}
	if r.MTU < 576 || r.MTU > 65535 {
		return fmt.Errorf("device MTU %d out of range", r.MTU)
	}
	if !r.Local.Is4() || !r.Peer.Is4() {
		return fmt.Errorf("device addresses %s, %s: want IPv4", r.Local, r.Peer)
	}
	if r.Peer6.IsValid() && (!r.Local6.Is6() || !r.Peer6.Is6() || r.Peer6.Is4In6()) {
		return fmt.Errorf("device IPv6 addresses %s, %s: want IPv6", r.Local6, r.Peer6)
	}
	return nil
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
