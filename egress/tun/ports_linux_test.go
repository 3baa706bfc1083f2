//go:build linux

package tun

import (
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"ocgate/egress/egresstest"
	"ocgate/protocol/datapath"
)

// TestTUNRestrictPorts: with restrict_user_to_ports, the device receives only the allowed packets; refused ones
// are dropped and counted, and the server's own address is exempt.
func TestTUNRestrictPorts(t *testing.T) {
	inNewNetns(t, func() {
		local, peer := netip.MustParseAddr("10.250.77.1"), netip.MustParseAddr("10.250.77.9")
		target := netip.MustParseAddr("10.99.0.1") // another address of this host
		if out, err := exec.Command("ip", "addr", "add", target.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Errorf("ip addr add: %v %s", err, out)
			return
		}
		exec.Command("ip", "link", "set", "lo", "up").Run()
		dp, err := New(Config{Prefix: "tst", Local: local})
		if err != nil {
			t.Error(err)
			return
		}
		defer dp.Close()
		var allowed, refused *net.UDPConn
		for _, c := range []**net.UDPConn{&allowed, &refused} {
			if *c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: target.AsSlice()}); err != nil {
				t.Error(err)
				return
			}
			defer (*c).Close()
		}
		okPort := uint16(allowed.LocalAddr().(*net.UDPAddr).Port)
		port, err := dp.Attach(&datapath.Session{ID: 1, User: "u", Addrs: []netip.Addr{peer}, MTU: 1400, Deliver: func([]byte) {},
			Ports: datapath.PortRules{Rules: []datapath.PortRule{{Proto: 17, Port: okPort}}}})
		if err != nil {
			t.Error(err)
			return
		}
		gw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local.AsSlice()})
		if err != nil {
			t.Error(err)
			return
		}
		defer gw.Close()
		send := func(dst netip.Addr, c *net.UDPConn, msg string) {
			port.Send(egresstest.UDP(peer, dst, 40000, uint16(c.LocalAddr().(*net.UDPAddr).Port), []byte(msg)))
		}
		send(target, refused, "refused")
		send(target, allowed, "allowed")
		send(local, gw, "gateway") // exempt although its port is not allowed
		for _, c := range []*net.UDPConn{allowed, gw} {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			if n, err := c.Read(buf); err != nil {
				t.Errorf("%s: %v", c.LocalAddr(), err)
			} else if got := string(buf[:n]); got != "allowed" && got != "gateway" {
				t.Errorf("%s: got %q", c.LocalAddr(), got)
			}
		}
		refused.SetReadDeadline(time.Now().Add(100 * time.Millisecond)) // sent first: it would be there by now
		if n, err := refused.Read(make([]byte, 100)); err == nil {
			t.Errorf("the refused port received %d bytes", n)
		}
		if d := port.(*tunPort).dropPort.Load(); d != 1 {
			t.Errorf("dropped for their port: %d, want 1", d)
		}
	})
}
