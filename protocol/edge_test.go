package protocol

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"ocgate/config"
	"ocgate/protocol/client"
)

// proxyV2 is the PROXY v2 header a balancer sends for a client at src.
func proxyV2(t *testing.T, src string) []byte {
	t.Helper()
	ap := netip.MustParseAddrPort(src)
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(ap), &net.TCPAddr{IP: net.IPv4(192, 0, 2, 80), Port: 443})
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialWith makes the client's TCP connection start with prefix (a PROXY header), as a balancer's would.
func dialWith(prefix []byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil && len(prefix) > 0 {
			_, err = c.Write(prefix)
		}
		return c, err
	}
}

// TestProxyProtocol: with listen_proxy_proto, a trusted peer's header (v1 or v2) names the client everywhere; a
// trusted peer without one, an untrusted peer with one, and a malformed one are closed with the reason logged.
func TestProxyProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix // nil: loopback, which the test dials from
		prefix  string
		remote  string // the session's client address; "" = refused
		logged  string
	}{
		{name: "a trusted peer's v2 header names the client", prefix: "v2", remote: "198.51.100.7", logged: "remote=198.51.100.7:4444"},
		{name: "a trusted peer's v1 header names the client", prefix: "PROXY TCP4 198.51.100.8 192.0.2.80 5555 443\r\n",
			remote: "198.51.100.8", logged: "remote=198.51.100.8:5555"},
		{name: "a trusted peer without a header is closed", prefix: "", logged: "no PROXY protocol header from a trusted proxy"},
		{name: "an untrusted peer with a header is closed", trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")},
			prefix: "v2", logged: "PROXY protocol header from a peer not in trusted_proxies"},
		{name: "an untrusted peer without a header connects directly", trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")},
			remote: "127.0.0.1", logged: "remote=127.0.0.1:"},
		{name: "a malformed header is closed", prefix: "PROXY TCP4 not-an-address\r\n", logged: "bad PROXY protocol header"},
		{name: "a v2 header of an unknown version is closed", prefix: "\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c",
			logged: "bad PROXY protocol header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, func(c *config.Config) {
				c.ListenProxyProto = true
				c.TrustedProxies = tc.trusted
				c.RequestTimeout = 2 * time.Second
			})
			prefix := []byte(tc.prefix)
			if tc.prefix == "v2" {
				prefix = proxyV2(t, "198.51.100.7:4444")
			}
			_, err := ts.dial(t, client.Options{Dial: dialWith(prefix)})
			waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), tc.logged) }, "the log to say "+tc.logged)
			if tc.remote == "" {
				if err == nil {
					t.Fatal("the connection was served")
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			if got := ts.srv.Sessions().All()[0].Info().Remote.Addr(); got.String() != tc.remote {
				t.Fatalf("session's client address %s, want %s", got, tc.remote)
			}
		})
	}
}

// tlsFront is a proxy that terminates TLS and passes the plain stream to a clear listener, with a PROXY v2 header
// naming the client when header is set: what HAProxy does with "ssl crt" and send-proxy-v2.
func tlsFront(t *testing.T, network, backend string, header func(client net.Addr) []byte) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				b, err := net.Dial(network, backend)
				if err != nil {
					return
				}
				defer b.Close()
				if header != nil {
					b.Write(header(c.RemoteAddr()))
				}
				go func() { io.Copy(b, c); b.Close() }()
				io.Copy(c, b)
			})
		}
	})
	return ln.Addr().String()
}

// serveClear serves a clear listener on ln until the test ends.
func serveClear(t *testing.T, ts *testServer, ln net.Listener) {
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeClear(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("ServeClear: %v", err)
		}
	})
}

// TestClearListenerBehindTLSProxy: a proxy terminating TLS in front of listen_clear_file carries a session; the
// client's address comes from the PROXY header, and DTLS is not offered.
func TestClearListenerBehindTLSProxy(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.ListenProxyProto = true })
	sock := filepath.Join(t.TempDir(), "clear.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveClear(t, ts, ln)
	front := tlsFront(t, "unix", sock, func(net.Addr) []byte { return proxyV2(t, "198.51.100.9:6000") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "https://" + front + "/", InsecureSkipVerify: true,
		User: "alice", Password: "secret", DTLS: true})
	if err != nil {
		t.Fatalf("Dial through the TLS proxy: %v", err)
	}
	defer c.Drop()
	if _, ok := c.Header["X-Dtls-Port"]; ok {
		t.Errorf("DTLS offered on a connection whose TLS the proxy terminated: %v", c.Header)
	}
	in := ts.srv.Sessions().All()[0].Info()
	if in.Remote.Addr().String() != "198.51.100.9" || in.Channel != "CSTP" {
		t.Fatalf("session info %+v: want client 198.51.100.9 on CSTP", in)
	}
}

// TestForwardedFor: on a clear listener without PROXY protocol, X-Forwarded-For names the client when a trusted
// proxy sends it and is ignored from anyone else.
func TestForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{name: "from a trusted proxy it names the client", want: "remote=203.0.113.9:0"},
		{name: "from an untrusted peer it is ignored", trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")},
			want: "remote=127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServer(t, func(c *config.Config) { c.TrustedProxies = tc.trusted })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			serveClear(t, ts, ln)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /no-such-page HTTP/1.1\r\nHost: vpn\r\nX-Forwarded-For: 10.1.1.1, 203.0.113.9\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 404 {
				t.Fatalf("response %v, %v: want 404", resp, err)
			}
			waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), tc.want) }, "the log to name "+tc.want)
		})
	}
}

func TestForwardedForParse(t *testing.T) {
	for _, tc := range []struct {
		hdr  []string
		want string // "" = none
	}{
		{nil, ""},
		{[]string{"203.0.113.9"}, "203.0.113.9"},
		{[]string{"10.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{[]string{"10.1.1.1", "2001:db8::1"}, "2001:db8::1"},
		{[]string{"[2001:db8::2]:443"}, "2001:db8::2"},
		{[]string{"::ffff:192.0.2.3"}, "192.0.2.3"},
		{[]string{"203.0.113.9, unknown"}, ""},
		{[]string{""}, ""},
	} {
		t.Run(strings.Join(tc.hdr, "|"), func(t *testing.T) {
			req := &request{}
			for _, v := range tc.hdr {
				req.header.Add("X-Forwarded-For", v)
			}
			a, ok := forwardedFor(req)
			if got := map[bool]string{true: a.String(), false: ""}[ok]; got != tc.want {
				t.Fatalf("forwardedFor(%q) = %q, want %q", tc.hdr, got, tc.want)
			}
		})
	}
}

// FuzzProxyHeader feeds arbitrary bytes to the PROXY header path of a trusted peer's connection: it must return
// an address or an error, never panic or hang past its deadline.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 198.51.100.8 192.0.2.80 5555 443\r\n\x16\x03\x01"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33\x64\x07\xc0\x00\x02\x50\x11\x5c\x01\xbb"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, policy := range []proxyproto.Policy{proxyproto.REQUIRE, proxyproto.REJECT} {
			srv, cli := net.Pipe()
			go func() { cli.Write(b); cli.Close() }()
			a := arrival{conn: proxyproto.NewConn(srv, proxyproto.WithPolicy(policy)), proxy: true}
			remote, _, _, err := readProxyHeader(a, time.Now().Add(time.Second))
			if err == nil && policy == proxyproto.REJECT && remote.IsValid() && strings.HasPrefix(string(b), "PROXY TCP") {
				t.Fatalf("an untrusted peer's header was accepted: %q", b)
			}
			srv.Close()
		}
	})
}
