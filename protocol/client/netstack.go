package client

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Net is a user-space TCP/IP stack (gVisor) whose only interface is a session's tunnel: its address is the
// session's X-CSTP-Address (and IPv6 address, if any), every route goes through the tunnel, and its MTU is the
// session's. It takes over the session's received packets (SetHandler).
type Net struct {
	s      *Session
	st     *stack.Stack
	ep     *channel.Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewNet attaches a stack to s.
func NewNet(s *Session) (*Net, error) {
	mtu := s.MTU
	if mtu <= 0 || mtu > 65535 {
		mtu = 1400
	}
	n := &Net{s: s, ep: channel.New(1024, uint32(mtu), "")}
	n.st = stack.New(stack.Options{
		// Targets on the server's loopback (a test's) answer from 127.0.0.0/8: let them in.
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	n.st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	n.st.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	if err := n.st.CreateNIC(1, n.ep); err != nil {
		n.st.Close()
		return nil, errors.New(err.String())
	}
	var routes []tcpip.Route
	for _, a := range []netip.Addr{s.Addr, s.Addr6.Addr()} {
		if !a.IsValid() {
			continue
		}
		proto, dst := ipv4.ProtocolNumber, header.IPv4EmptySubnet
		if a.Is6() {
			proto, dst = ipv6.ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := n.st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			n.st.Close()
			return nil, errors.New(err.String())
		}
		routes = append(routes, tcpip.Route{Destination: dst, NIC: 1})
	}
	n.st.SetRouteTable(routes)
	s.SetHandler(func(pkt []byte) {
		if len(pkt) == 0 {
			return
		}
		proto := ipv4.ProtocolNumber
		if pkt[0]>>4 == 6 {
			proto = ipv6.ProtocolNumber
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		n.ep.InjectInbound(proto, pb)
		pb.DecRef()
	})
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(1)
	go func() { // stack → tunnel
		defer n.wg.Done()
		for {
			pkt := n.ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			n.s.WritePacket(v.AsSlice())
			v.Release()
			pkt.DecRef()
		}
	}()
	return n, nil
}

func fullAddr(a netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if a.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(a.Addr().Unmap().AsSlice()), Port: a.Port()}, proto
}

// DialTCP opens a TCP connection through the tunnel.
func (n *Net) DialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialContextTCP(ctx, n.st, fa, proto)
}

// DialUDP opens a connected UDP socket through the tunnel.
func (n *Net) DialUDP(dst netip.AddrPort) (*gonet.UDPConn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialUDP(n.st, nil, &fa, proto)
}

// Close stops the stack (open connections fail). The session stays up; its packets go to the ReadPacket queue.
func (n *Net) Close() {
	n.once.Do(func() {
		n.s.SetHandler(nil)
		n.cancel()
		n.wg.Wait()
		n.st.Close()
		n.st.Wait()
		n.ep.Close()
	})
}
