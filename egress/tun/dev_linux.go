//go:build linux

package tun

// Creating and configuring one session's TUN device: /dev/net/tun with IFF_VNET_HDR (so the packet I/O can use
// the kernel's segmentation offloads both ways: offload.go), then addresses, MTU, link state and the
// routes behind the client through netlink (vishvananda/netlink). Both need CAP_NET_ADMIN; this file runs either in
// the server process (root or the capability) or in the privileged helper (package egress/privsep).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LocalOpener opens devices in this process, which needs CAP_NET_ADMIN.
type LocalOpener struct{}

var _ DeviceOpener = LocalOpener{}

// ErrNoNetAdmin explains the usual reason why a TUN device could not be created.
var ErrNoNetAdmin = errors.New(`the tun datapath needs CAP_NET_ADMIN: run ocgate as root (with run_as_user to drop privileges), or give the binary the capability (setcap cap_net_admin+ep), or use datapath = "netstack"`)

// OpenDevice creates and configures the device described by r.
func (LocalOpener) OpenDevice(_ context.Context, r DeviceRequest) (int, string, error) {
	if err := r.validate(); err != nil {
		return -1, "", err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return -1, "", fmt.Errorf("opening /dev/net/tun: %w (%w)", err, ErrNoNetAdmin)
		}
		return -1, "", fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(r.Prefix + "%d")
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return -1, "", fmt.Errorf("creating a TUN device: %w (%w)", err, ErrNoNetAdmin)
		}
		return -1, "", fmt.Errorf("creating a TUN device: %w", err)
	}
	name := ifr.Name()
	if err := configure(name, r); err != nil {
		unix.Close(fd) // the device goes away with its only descriptor
		return -1, "", fmt.Errorf("configuring %s: %w", name, err)
	}
	return fd, name, nil
}

// configure gives the device its point-to-point addresses and MTU, brings it up and adds the routes behind the
// client.
func configure(name string, r DeviceRequest) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMTU(link, r.MTU); err != nil {
		return fmt.Errorf("setting MTU %d: %w", r.MTU, err)
	}
	// Without IPv6 inside the tunnel, keep the kernel from sending router solicitations and MLD reports to the
	// client. Best effort: the sysctl may be absent.
	if !r.Peer6.IsValid() {
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	}
	addr := &netlink.Addr{
		IPNet: &net.IPNet{IP: r.Local.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Peer:  &net.IPNet{IP: r.Peer.AsSlice(), Mask: net.CIDRMask(32, 32)},
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding address %s peer %s: %w", r.Local, r.Peer, err)
	}
	if r.Peer6.IsValid() {
		addr6 := &netlink.Addr{
			IPNet: &net.IPNet{IP: r.Local6.AsSlice(), Mask: net.CIDRMask(128, 128)},
			Peer:  &net.IPNet{IP: r.Peer6.AsSlice(), Mask: net.CIDRMask(128, 128)},
			Flags: unix.IFA_F_NODAD,
		}
		if err := netlink.AddrAdd(link, addr6); err != nil {
			return fmt.Errorf("adding address %s peer %s: %w", r.Local6, r.Peer6, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing the link up: %w", err)
	}
	if r.Peer6.IsValid() {
		// IPv6 gets no route to a point-to-point peer from the address alone (IPv4 does).
		rt := &netlink.Route{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V6, Scope: netlink.SCOPE_UNIVERSE,
			Dst: &net.IPNet{IP: r.Peer6.AsSlice(), Mask: net.CIDRMask(128, 128)}}
		if err := netlink.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding the route to %s: %w", r.Peer6, err)
		}
	}
	for _, p := range r.Routes {
		rt := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Family:    map[bool]int{true: netlink.FAMILY_V4, false: netlink.FAMILY_V6}[p.Addr().Is4()],
			Dst:       &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteAdd(rt); err != nil {
			return fmt.Errorf("adding route %s (iroute): %w", p, err)
		}
	}
	return nil
}

// deviceHasVnetHdr reports whether the TUN device behind fd was created with IFF_VNET_HDR (TUNGETIFF): then a
// virtio-net header precedes every packet read or written.
func deviceHasVnetHdr(fd int) (bool, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return false, err
	}
	return ifr.Uint16()&unix.IFF_VNET_HDR != 0, nil
}
