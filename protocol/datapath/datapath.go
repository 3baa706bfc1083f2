// Package datapath is the seam between tunnel sessions (package protocol) and what carries their packets to the
// network: the in-process gVisor stack (package netstack) or kernel TUN devices (package egress/tun). It holds only
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
	// Routes are the destinations pushed to the client: an empty list means everything, 0.0.0.0/0 every IPv4
	// destination and ::/0 every IPv6 one (config's "default" is both). The netstack refuses flows outside them;
	// the kernel-TUN datapath with RestrictToRoutes. The decision is egress's (egress.SessionPolicy).
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
	// Ports is restrict_user_to_ports; its zero value restricts nothing. Traffic to the server's own in-pool
	// address is never asked about (ocserv's firewall filters forwarded traffic only). The netstack asks once per
	// new flow (a refused TCP flow is reset, a UDP flow dropped, an ICMP echo answered "administratively
	// prohibited") and per client-to-client packet; the kernel-TUN datapath per packet from the client (refused
	// ones are dropped).
	Ports PortRules
	// DNS are the DNS servers pushed to the client: TCP and UDP port 53 to them pass Ports, as under ocserv's
	// firewall script (ocserv-fw).
	DNS []netip.Addr
	// MTU is the tunnel MTU negotiated with the client: packets delivered to Deliver are at most this long.
	MTU int
	// Deliver is called with each IP packet for the session. It may be called from several goroutines at once,
	// must not block (it queues or drops) and must not retain pkt after it returns.
	Deliver func(pkt []byte)
	// DeliverBuffer, when set, is Deliver without a copy: it takes b over (queues it, or releases it when it drops
	// the packet), and the carrier writes its framing into b's room in place (buffer.go). Deliver's other rules
	// hold. A datapath calls DeliverBuf, which falls back on Deliver when DeliverBuffer is nil.
	DeliverBuffer func(b *Buffer)
	// DeliverHeld and Kick, when set, split DeliverBuffer in two for a datapath that hands over several packets
	// at once (gVisor's segmentation offload cutting one segment into MTU packets, a TSO segment from a TUN
	// device): DeliverHeld takes b over as DeliverBuffer does but need not send it
	// yet; Kick sends what is held. A datapath calls DeliverBufHeld and, once its burst is over and before it
	// waits for anything, KickSender. Kick does not block.
	DeliverHeld func(b *Buffer)
	Kick        func()
}

// PortRules is restrict_user_to_ports (ocserv's syntax, parsed by config).
type PortRules struct {
	// Deny is the "!(...)" form: the listed ports are refused and everything else passes. Otherwise only the
	// listed ports pass. Without rules everything passes.
	Deny  bool
	Rules []PortRule
}

// PortRule is one entry of restrict_user_to_ports.
type PortRule struct {
	Proto uint8  // IP protocol number: 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, 50 ESP
	Port  uint16 // destination port for TCP, UDP and SCTP; 0: the whole protocol
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

// Burster is implemented by ports that coalesce the packets of a burst before processing them (the netstack:
// gVisor's receive coalescing, GRO, which hands consecutive segments of a TCP flow to the stack as one). SendBurst
// is Send, except that the port may hold the packet until EndBurst; a caller that uses it must call EndBurst when
// the burst is over, before it waits for more packets (the DTLS socket reader: after each recvmmsg batch).
type Burster interface {
	SendBurst(pkt []byte) error
	EndBurst()
}

// Carrier is what carries a session's packets to and from its client at the moment.
type Carrier uint8

const (
	CarrierTLS  Carrier = iota // CSTP frames over TLS (TCP) only
	CarrierDTLS                // DTLS records (UDP)
)

func (c Carrier) String() string {
	if c == CarrierDTLS {
		return "DTLS"
	}
	return "TLS"
}

// CarrierAware is implemented by ports that act on the session's carrier (the kernel-TUN datapath hands over
// segmentation-offload bursts only while it is DTLS). The session states the carrier when the tunnel starts
// and on every change; what it means is the port's decision.
type CarrierAware interface {
	Carrier(c Carrier)
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
