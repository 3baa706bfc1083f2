package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// listen runs an echo service on the test client's stack (a service on the VPN client's address).
func (c *testClient) listen(t *testing.T, port uint16) {
	t.Helper()
	ln, err := gonet.ListenTCP(c.st, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(clientIP.AsSlice()), Port: port}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(conn, conn); conn.Close() }()
		}
	}()
}

func echoOnce(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != msg {
		t.Fatalf("echo: %q, %v", b, err)
	}
	conn.SetDeadline(time.Time{})
}

func TestDialClient(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	c.listen(t, 7000)
	ctx := context.Background()
	conn, err := s.DialClient(ctx, "tcp", netip.AddrPortFrom(clientIP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.LocalAddr().String(); !strings.HasPrefix(got, gateway.String()+":") {
		t.Errorf("local address %s, want the gateway's", got)
	}
	echoOnce(t, conn, "hello client")
	p := s.lookup(clientIP)
	if n := p.flows.Load(); n != 1 {
		t.Errorf("%d flows while connected, want 1", n)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
		t.Errorf("after CloseWrite: %q, %v (want EOF from the echo)", b, err)
	}
	conn.Close()
	conn.Close()
	if n := p.flows.Load(); n != 0 {
		t.Errorf("%d flows after Close, want 0", n)
	}

	if _, err := s.DialClient(ctx, "tcp", netip.AddrPortFrom(clientIP, 7001).String()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port on the client: %v, want refused", err)
	}
	for _, dst := range []string{"10.250.77.9:7000", gateway.String() + ":53", "127.0.0.1:7000", "192.0.2.1:80", "[::ffff:10.250.77.9]:7000"} {
		if _, err := s.DialClient(ctx, "tcp", dst); !errors.Is(err, ErrNotClient) {
			t.Errorf("%s: %v, want ErrNotClient", dst, err)
		}
	}
	for _, tc := range [][2]string{{"tcp", "localhost:7000"}, {"udp", clientIP.String() + ":7000"}, {"tcp6", clientIP.String() + ":7000"}} {
		if _, err := s.DialClient(ctx, tc[0], tc[1]); err == nil {
			t.Errorf("%s %s: dialled", tc[0], tc[1])
		}
	}
}

func TestDialClientResetWhenSessionEnds(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	c.listen(t, 7000)
	conn, err := s.DialClient(context.Background(), "tcp", netip.AddrPortFrom(clientIP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoOnce(t, conn, "x")
	c.port.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read after the session ended: %v, want a reset", err)
	}
	if _, err := s.DialClient(context.Background(), "tcp", netip.AddrPortFrom(clientIP, 7000).String()); !errors.Is(err, ErrNotClient) {
		t.Fatalf("dial after the session ended: %v", err)
	}
}

// startSOCKS serves SOCKS on a loopback port and returns its address and ServeSOCKS's result.
func startSOCKS(t *testing.T, s *Stack, cfg SOCKSConfig) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeSOCKS(ln, cfg) }()
	return ln.Addr().String(), done
}

func socksDial(t *testing.T, socks string, auth *proxy.Auth, dst string) (net.Conn, error) {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", socks, auth, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d.Dial("tcp", dst)
}

func TestSOCKSOnlyToClients(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	c.listen(t, 7000)
	host := echoServer(t) // on the host's loopback: must stay out of reach
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	socks, done := ln.Addr().String(), make(chan error, 1)
	go func() { done <- s.ServeSOCKS(ln, SOCKSConfig{}) }()

	conn, err := socksDial(t, socks, nil, netip.AddrPortFrom(clientIP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "through socks")
	conn.Close()

	for _, tc := range [][2]string{
		{host.String(), "not allowed by ruleset"},      // the host itself
		{"10.250.77.9:7000", "not allowed by ruleset"}, // a pool address no session holds
		{gateway.String() + ":53", "not allowed by ruleset"},
		{"192.0.2.1:80", "not allowed by ruleset"},
		{"[::1]:" + strconv.Itoa(int(host.Port())), "not allowed by ruleset"},
		{"localhost:" + strconv.Itoa(int(host.Port())), "host unreachable"}, // names are not resolved
	} {
		conn, err := socksDial(t, socks, nil, tc[0])
		if err == nil {
			conn.Close()
			t.Errorf("%s: connected through SOCKS", tc[0])
		} else if !strings.Contains(err.Error(), tc[1]) {
			t.Errorf("%s: %v, want %q", tc[0], err, tc[1])
		}
	}
	if _, err := socksDial(t, socks, nil, netip.AddrPortFrom(clientIP, 7001).String()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port on the client: %v, want connection refused", err)
	}
	// A name that is an address literal is accepted.
	conn, err = socksDial(t, socks, nil, netip.AddrPortFrom(clientIP, 7000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	s.Close() // closes the listener and the connections
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeSOCKS: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeSOCKS did not return when the stack closed")
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("SOCKS connection after the stack closed: %v", err)
	}
	// The listener is closed: Accept fails at once. (Dialling its port would not tell: once the port is free,
	// another process's test may listen on it.)
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Error("the SOCKS listener is still open")
	}
}

func TestSOCKSAuth(t *testing.T) {
	s, c := newTestStack(t, loopback, nil)
	c.listen(t, 7000)
	socks, _ := startSOCKS(t, s, SOCKSConfig{User: "u", Password: "p4ss"})
	dst := netip.AddrPortFrom(clientIP, 7000).String()
	for _, auth := range []*proxy.Auth{nil, {User: "u", Password: "wrong"}, {User: "v", Password: "p4ss"}, {User: "u", Password: "p4s"}} {
		if conn, err := socksDial(t, socks, auth, dst); err == nil {
			conn.Close()
			t.Errorf("auth %+v accepted", auth)
		}
	}
	conn, err := socksDial(t, socks, &proxy.Auth{User: "u", Password: "p4ss"}, dst)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "authenticated")
	conn.Close()

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.ServeSOCKS(ln, SOCKSConfig{User: "u"}); err == nil {
		t.Error("a user without a password accepted")
	}
}

func TestSOCKSHandshakeTimeout(t *testing.T) {
	s, _ := newTestStack(t, loopback, nil)
	socks, _ := startSOCKS(t, s, SOCKSConfig{HandshakeTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", socks)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a silent SOCKS client: %v, want the server to close", err)
	}
}
