// Package datapath is the seam between tunnel sessions (package protocol) and what carries their packets to the
// network: the in-process gVisor stack (package netstack) or kernel TUN devices (package egress). It holds only
// this contract, so that neither side imports the other and cmd/ocgate does the wiring.
package datapath

import "net/netip"

// Session is what a datapath learns about a tunnel session when it attaches. The datapath must not modify it.
type Session struct {
	// ID is the session's unique number (also shown by the management interface).
	ID uint64
	// User and Groups identify who authenticated; used by policy and logs.
	User   string
	Groups []string
	// Addrs are the tunnel addresses assigned to the session. A packet from the client whose source is not one of
	// them is dropped (anti-spoofing); packets for them are delivered to this session.
	Addrs []netip.Addr
	// Routes are the destinations pushed to the client. An empty list, or one containing a /0 prefix, means the
	// client routes everything through the tunnel. The datapath's egress policy refuses destinations outside them.
	Routes []netip.Prefix
	// NoRoutes are destinations excluded from the tunnel (split-exclude); refused as well.
	NoRoutes []netip.Prefix
	// IRoutes are networks behind the client (ocserv's iroute): packets for them are delivered to this session,
	// and packets from them are accepted from it.
	IRoutes []netip.Prefix
	// RestrictToRoutes drops packets from the client to destinations outside Routes (or inside NoRoutes), for a
	// datapath that would otherwise forward anything (kernel TUN). The netstack always enforces the routes.
	RestrictToRoutes bool
	// ClientToClient lets the session exchange packets with other sessions' addresses (both must allow it; with
	// RestrictToRoutes the other address must also be inside Routes). The netstack switches such packets
	// between the two sessions itself.
	ClientToClient bool
	// AllowPort is restrict_user_to_ports: whether the client may send IP protocol proto to dst, whose port is the
	// destination port for TCP (6), UDP (17) and SCTP (132) and 0 for other protocols (ICMP 1, ICMPv6 58, ESP 50...).
	// nil allows everything. Traffic to the server's own in-pool address is never asked about (ocserv's firewall
	// filters forwarded traffic only). The netstack asks once per new flow (a refused TCP flow is reset, a UDP flow
	// dropped, an ICMP echo answered "administratively prohibited") and per client-to-client packet; the kernel-TUN
	// datapath per packet from the client (refused ones are dropped). It must be safe for concurrent use and fast.
	AllowPort func(proto uint8, dst netip.AddrPort) bool
	// MTU is the tunnel MTU negotiated with the client: packets delivered to Deliver are at most this long.
	MTU int
	// Deliver is called with each IP packet for the session. It may be called from several goroutines at once,
	// must not block (it queues or drops) and must not retain pkt after it returns.
	Deliver func(pkt []byte)
}

// Port is a session's attachment to a datapath.
type Port interface {
	// Send injects one IP packet that the client sent. The datapath does not retain pkt after Send returns.
	// Send is safe for concurrent use; it returns an error only when the port is closed.
	Send(pkt []byte) error
	// Close detaches the session: no Deliver call starts after Close returns, flows owned by the session are
	// torn down. Close is idempotent.
	Close() error
}

// Segmenter is implemented by ports whose host side can hand over segmentation-offload bursts (the kernel-TUN
// datapath: 64 KiB TCP segments that the port splits). Offloads(false) asks for MTU-sized packets instead, which
// suits a session carried over TLS (see tunnel.go); Offloads(true) asks for the bursts again.
type Segmenter interface {
	Offloads(on bool)
}

// Device is implemented by ports backed by a network interface (the kernel-TUN datapath): DeviceName is the
// interface's name (vpns0), given to scripts as DEVICE.
type Device interface {
	DeviceName() string
}

// Datapath carries the packets of every session of one server.
type Datapath interface {
	// Attach connects a session. It fails when one of s.Addrs is already attached.
	Attach(s *Session) (Port, error)
	// Close tears the datapath down; ports still attached are closed.
	Close() error
}
