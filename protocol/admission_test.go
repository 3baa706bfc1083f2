package protocol

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ocgate/config"
	"ocgate/protocol/client"
)

func TestAdmission(t *testing.T) {
	a, b, c := sourceOf(netip.MustParseAddr("192.0.2.1")), sourceOf(netip.MustParseAddr("192.0.2.2")),
		sourceOf(netip.MustParseAddr("192.0.2.3"))
	now := time.Unix(1e9, 0)
	t.Run("the rate is per source, in bursts", func(t *testing.T) {
		ad := newAdmission(time.Second, 0, 0)
		for i := range rateBurst {
			if ok, why := ad.admit(a, now); !ok {
				t.Fatalf("connection %d of a burst refused: %s", i+1, why)
			}
			ad.release(a)
		}
		if ok, why := ad.admit(a, now); ok || why != "rate_limit_ms" {
			t.Fatalf("over the burst: %v %q, want a refusal by rate_limit_ms", ok, why)
		}
		if ok, _ := ad.admit(b, now); !ok {
			t.Fatal("another source was refused because of the first one's rate")
		}
		if ok, _ := ad.admit(a, now.Add(time.Second)); !ok {
			t.Fatal("a second later, the source still refused")
		}
	})
	t.Run("caps on unauthenticated connections", func(t *testing.T) {
		ad := newAdmission(0, 3, 2)
		for _, src := range []netip.Prefix{a, a} {
			if ok, why := ad.admit(src, now); !ok {
				t.Fatalf("refused: %s", why)
			}
		}
		if ok, why := ad.admit(a, now); ok || why != "max_unauth_per_ip" {
			t.Fatalf("third from one source: %v %q", ok, why)
		}
		if ok, _ := ad.admit(b, now); !ok {
			t.Fatal("another source refused below the total cap")
		}
		if ok, why := ad.admit(c, now); ok || why != "max_unauth_clients" {
			t.Fatalf("over the total: %v %q", ok, why)
		}
		ad.release(a)
		if ok, _ := ad.admit(c, now); !ok || ad.unauthenticated() != 3 {
			t.Fatalf("after a release: %v, %d unauthenticated", ok, ad.unauthenticated())
		}
	})
	t.Run("an IPv6 /64 is one source", func(t *testing.T) {
		p1, p2 := sourceOf(netip.MustParseAddr("2001:db8::1")), sourceOf(netip.MustParseAddr("2001:db8::ffff:2"))
		other := sourceOf(netip.MustParseAddr("2001:db8:0:1::1"))
		if p1 != p2 || p1 == other || sourceOf(netip.MustParseAddr("::ffff:192.0.2.1")) != a {
			t.Fatalf("sources %s %s %s", p1, p2, other)
		}
	})
	t.Run("idle sources are forgotten", func(t *testing.T) {
		ad := newAdmission(time.Millisecond, 0, 0)
		for i := range 3 * minSweep {
			src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
			ad.admit(src, now.Add(time.Duration(i)*time.Second))
			ad.release(src)
		}
		if n := len(ad.sources); n > minSweep {
			t.Fatalf("%d sources remembered, want at most %d", n, minSweep)
		}
	})
}

// dialFrom dials the test server from a source address of 127/8.
func dialFrom(src string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.DialContext
}

// refusedBeforeTLS reports whether a connection from src is closed without a TLS handshake.
func refusedBeforeTLS(t *testing.T, ts *testServer, src string) bool {
	t.Helper()
	conn, err := dialFrom(src)(context.Background(), "tcp", ts.addr)
	if err != nil {
		return true
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	err = tc.Handshake()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("handshake from %s neither done nor refused: %v", src, err)
	}
	return err != nil
}

// idleConns opens n TCP connections from src that never send a byte.
func idleConns(t *testing.T, ts *testServer, src string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := dialFrom(src)(context.Background(), "tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// waitUnauth waits until the server counts n unauthenticated connections.
func waitUnauth(t *testing.T, ts *testServer, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() bool { return ts.srv.adm.unauthenticated() == n }, fmt.Sprintf("%d unauthenticated connections", n))
}

// Connections not logged in yet are capped per source and in total, and refused before TLS; a logged-in
// connection leaves the counts.
func TestUnauthenticatedCaps(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.MaxUnauthPerIP = 2; c.MaxUnauthClients = 3 })
	idle := idleConns(t, ts, "127.0.0.2", 2)
	waitUnauth(t, ts, 2)
	if !refusedBeforeTLS(t, ts, "127.0.0.2") {
		t.Fatal("a third connection from one source was served")
	}
	// Another source logs in, and its tunnel no longer counts: a second one from there is served too.
	c1 := ts.mustDial(t, client.Options{Dial: dialFrom("127.0.0.3")})
	ts.mustDial(t, client.Options{Dial: dialFrom("127.0.0.3"), Cookie: c1.Cookie})
	waitUnauth(t, ts, 2)
	idleConns(t, ts, "127.0.0.4", 1)
	waitUnauth(t, ts, 3)
	if !refusedBeforeTLS(t, ts, "127.0.0.5") {
		t.Fatal("a connection over max_unauth_clients was served")
	}
	idle[0].Close()
	waitUnauth(t, ts, 2)
	if refusedBeforeTLS(t, ts, "127.0.0.5") {
		t.Fatal("refused although a place was free again")
	}
	if !strings.Contains(ts.log.String(), "limit=max_unauth_per_ip") {
		t.Fatalf("no refusal logged:\n%s", ts.log.String())
	}
}

// rate_limit_ms refuses a source over its rate at once, and never delays another source.
func TestRateLimitPerSource(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.RateLimitMS = 60000; c.MaxUnauthPerIP = 0 })
	idleConns(t, ts, "127.0.0.2", rateBurst)
	waitUnauth(t, ts, rateBurst)
	if !refusedBeforeTLS(t, ts, "127.0.0.2") {
		t.Fatal("a connection over the source's rate was served")
	}
	start := time.Now()
	ts.mustDial(t, client.Options{Dial: dialFrom("127.0.0.3")})
	t.Logf("login from another source took %s", time.Since(start))
}

// max_clients counts sessions only: connections still authenticating never lock logins out.
func TestMaxClientsCountsSessionsOnly(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.MaxClients = 1 })
	idleConns(t, ts, "127.0.0.2", 8)
	waitUnauth(t, ts, 8)
	ts.mustDial(t, client.Options{})
	_, err := ts.dial(t, client.Options{})
	if err == nil || !strings.Contains(err.Error(), "maximum number of clients") {
		t.Fatalf("a second session over max_clients = 1: %v, want the server's message", err)
	}
	if !strings.Contains(ts.log.String(), "reached maximum client limit") {
		t.Fatalf("refusal not logged:\n%s", ts.log.String())
	}
}

// Once a request's first byte has arrived, the rest must follow within request_timeout; a connection idle
// between requests waits for auth_timeout only.
func TestRequestTimeout(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.RequestTimeout = time.Second })
	tlsDial := func() *tls.Conn {
		c, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	idle, slow := tlsDial(), tlsDial()
	io.WriteString(slow, "POST /auth HTTP/1.1\r\nHost: x\r\n")
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ne net.Error
	if _, err := slow.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a partial request was not cut off: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := idle.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a connection idle before its first request was closed: %v", err)
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "reading request: timeout") },
		"the timeout in the log")
}

// Failed TLS handshakes score ban_points_connection on top of the connection's: a flood of random bytes from
// one address is banned. A connection closed without a byte (a health check) scores as a connection only.
func TestHandshakeFailuresScore(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.MaxBanScore = 10; c.BanPointsConnection = 1 })
	junk := make([]byte, 512)
	rand.Read(junk)
	for range 5 { // 2 points each
		c := idleConns(t, ts, "127.0.0.2", 1)[0]
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // until the server closes it
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(ts.log.String(), "failed TLS handshakes") },
		"the ban in the log")
	if !refusedBeforeTLS(t, ts, "127.0.0.2") {
		t.Fatal("the flooding address is not banned")
	}
	for range 8 { // 1 point each
		c := idleConns(t, ts, "127.0.0.3", 1)[0]
		c.Close()
	}
	waitUnauth(t, ts, 0)
	if refusedBeforeTLS(t, ts, "127.0.0.3") {
		t.Fatal("connections closed before a byte were scored as failed handshakes")
	}
}

// A reload (SetConfig) applies max_clients to the next login: the limits are read from the live configuration.
func TestMaxClientsReloaded(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.MaxClients = 1 })
	ts.mustDial(t, client.Options{})
	if _, err := ts.dial(t, client.Options{}); err == nil {
		t.Fatal("a second session over max_clients = 1 was let in")
	}
	cfg := *ts.srv.Config()
	cfg.MaxClients = 2
	ts.srv.SetConfig(&cfg)
	if _, err := ts.dial(t, client.Options{}); err != nil {
		t.Fatalf("a second session after the reload raised max_clients to 2: %v", err)
	}
}
