// Package privsep is what needs privileges and is kept apart from the process facing the network: the privileged
// helper (helper_linux.go) that creates TUN devices and runs scripts as root, the script runner, and dropping
// root once the sockets are bound.
package privsep

// The privileged helper's configuration, the same on every system; helper_linux.go implements the helper.

import "net/netip"

// HelperConfig bounds what the helper does.
type HelperConfig struct {
	Prefix string       // device name prefix
	Local  netip.Addr   // the server's address on every device
	Local6 netip.Addr   // its IPv6 address (invalid: no IPv6)
	Pool6  netip.Prefix // client IPv6 addresses must be inside
	Pool   netip.Prefix // client addresses must be inside
	// UserPools are more client networks (IPv4 or IPv6) whose clients get that network's gateway
	// (tun.Gateway) as the server's address.
	UserPools []netip.Prefix
	Scripts   Scripts
}
