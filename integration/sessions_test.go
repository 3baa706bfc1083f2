package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReconnectWithCookie: the client is killed (no BYE); the cookie it got brings the same address back without
// a password, and traffic flows.
func TestReconnectWithCookie(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), ``)
	cookie := authenticate(t, s, vpnUser, vpnPass)
	c1 := connectCookie(t, s, cookie)
	// A flow before the kill: the next ocproxy reuses its source port, which must not hit a stale endpoint.
	download(t, c1, 1<<20, 30)
	c1.proc.cmd.Process.Signal(syscall.SIGKILL)
	c1.waitExit(t, 10*time.Second)
	c2 := connectCookie(t, s, cookie)
	if c2.ip != c1.ip {
		t.Fatalf("reconnect got %s, first connection had %s", c2.ip, c1.ip)
	}
	if strings.Contains(c2.proc.out.String(), "Please enter") {
		t.Fatal("the cookie reconnect asked for credentials")
	}
	download(t, c2, 4<<20, 31)
}

// TestTakeover: a second client with the same cookie takes the session over; the first is told the session is
// over and exits; the second keeps the address and carries traffic.
func TestTakeover(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), ``)
	cookie := authenticate(t, s, vpnUser, vpnPass)
	c1 := connectCookie(t, s, cookie)
	c2 := connectCookie(t, s, cookie)
	if code := c1.waitExit(t, 10*time.Second); code != 1 || !strings.Contains(c1.proc.out.String(), "Session terminated by server") {
		t.Fatalf("first client: exit %d\n%s", code, c1.proc.out.String())
	}
	if c2.ip != c1.ip {
		t.Fatalf("takeover got %s, first client had %s", c2.ip, c1.ip)
	}
	download(t, c2, 16<<20, 32)
	if !strings.Contains(s.stderr.String(), `reason="replaced by a new connection"`) {
		t.Fatal("the server did not log the takeover")
	}
}

// TestCookieExpiryAndLogout: an unused cookie dies after cookie_timeout; a logged-out one at once. Both are then
// refused the way ocserv refuses them (the client exits 2, "Cookie was rejected by server").
func TestCookieExpiryAndLogout(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "cookie_timeout = 1\nmax_same_clients = 0")
	expired := authenticate(t, s, vpnUser, vpnPass)
	waitFor(t, 10*time.Second, "the cookie to expire", func() bool {
		return strings.Contains(s.stderr.String(), `reason="cookie expired"`)
	})
	rejected := func(cookie, what string) {
		c := launchCookie(t, s, cookie)
		if code := c.waitExit(t, 20*time.Second); code != 2 || !strings.Contains(c.proc.out.String(), "Cookie was rejected by server") {
			t.Fatalf("%s: exit %d\n%s", what, code, c.proc.out.String())
		}
	}
	rejected(expired, "expired cookie")

	cookie := authenticate(t, s, vpnUser, vpnPass)
	c := connectCookie(t, s, cookie)
	c.proc.stop(10 * time.Second) // SIGTERM: the client sends its BYE
	waitFor(t, 10*time.Second, "the logout", func() bool {
		return strings.Contains(s.stderr.String(), `reason="user logged out"`)
	})
	rejected(cookie, "cookie after logout")
}

// TestDeadPeerFreesAddress: a client that stops answering (SIGSTOP) is dropped after the DPD timeout; once its
// cookie expires its address is free again, and the same user gets it back.
func TestDeadPeerFreesAddress(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "dpd = 1\ncookie_timeout = 1\nmax_same_clients = 0")
	c1 := connect(t, s, vpnUser, vpnPass)
	c1.proc.cmd.Process.Signal(syscall.SIGSTOP)
	defer c1.proc.cmd.Process.Signal(syscall.SIGCONT)
	waitFor(t, 15*time.Second, "the DPD timeout", func() bool {
		return strings.Contains(s.stderr.String(), "DPD timeout")
	})
	waitFor(t, 10*time.Second, "the session to end", func() bool {
		return strings.Contains(s.stderr.String(), `reason="cookie expired"`)
	})
	c2 := connect(t, s, vpnUser, vpnPass)
	if c2.ip != c1.ip {
		t.Fatalf("after the dead peer's session ended, the user got %s, not its freed address %s", c2.ip, c1.ip)
	}
	download(t, c2, 1<<20, 33)
}

// TestMaxSameClients: with max_same_clients = 1 a second session of the same user is refused at its CONNECT, as
// ocserv does ("401 Cookie is not acceptable"), and the server says why.
func TestMaxSameClients(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "max_same_clients = 1")
	connect(t, s, vpnUser, vpnPass)
	c2 := launch(t, ns, s.pin, vpnUser, vpnPass, s.url())
	if code := c2.waitExit(t, 20*time.Second); code == 0 || configuredRE.MatchString(c2.proc.out.String()) ||
		!strings.Contains(s.stderr.String(), "max_same_clients") {
		t.Fatalf("second session: exit %d\n%s", code, c2.proc.out.String())
	}
}

// TestBanAfterWrongPasswords: wrong passwords from one address get it banned for ban_time; another address is
// unaffected; after ban_time the first address is welcome again.
func TestBanAfterWrongPasswords(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "listen_host = \"\"\nmax_ban_score = 20\nban_points_wrong_password = 10\nban_time = 3\nrate_limit_ms = 0")
	for range 2 {
		c := launch(t, ns, s.pin, vpnUser, "wrong", s.url())
		c.waitExit(t, 20*time.Second)
	}
	waitFor(t, 5*time.Second, "the ban", func() bool { return strings.Contains(s.stderr.String(), `msg="address banned" remote=127.0.0.1`) })
	c := launch(t, ns, s.pin, vpnUser, vpnPass, s.url())
	if code := c.waitExit(t, 20*time.Second); code == 0 || configuredRE.MatchString(c.proc.out.String()) {
		t.Fatalf("banned address connected: exit %d\n%s", code, c.proc.out.String())
	}
	// 10.77.0.1 is another address of the same namespace: connecting to it, the client's source is 10.77.0.1.
	other := launch(t, ns, s.pin, vpnUser, vpnPass, "https://10.77.0.1:8443/")
	other.waitConfigured(t)
	other.proc.stop(10 * time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := launch(t, ns, s.pin, vpnUser, vpnPass, s.url())
		waitFor(t, 20*time.Second, "the client to connect or give up", func() bool {
			return configuredRE.MatchString(c.proc.out.String()) || c.proc.exited()
		})
		if !c.proc.exited() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused long after ban_time:\n%s", c.proc.out.String())
		}
	}
}

// TestMobileDPD: a client logging in as a mobile platform gets mobile_dpd.
func TestMobileDPD(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "dpd = 90\nmobile_dpd = 300\nmax_same_clients = 0")
	desk := connect(t, s, vpnUser, vpnPass)
	mobile := connect(t, s, vpnUser, vpnPass, "--os", "android")
	if !strings.Contains(desk.proc.out.String(), "CSTP connected. DPD 90,") ||
		!strings.Contains(mobile.proc.out.String(), "CSTP connected. DPD 300,") {
		t.Fatalf("desktop:\n%s\nmobile:\n%s", desk.proc.out.String(), mobile.proc.out.String())
	}
}

// TestSessionTimeout: session_timeout ends the session: the client is told so and exits, the cookie is dead.
func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "session_timeout = 2")
	cookie := authenticate(t, s, vpnUser, vpnPass)
	c := connectCookie(t, s, cookie)
	if code := c.waitExit(t, 20*time.Second); code != 1 || !strings.Contains(c.proc.out.String(), "Session terminated by server") {
		t.Fatalf("exit %d\n%s", code, c.proc.out.String())
	}
	again := launchCookie(t, s, cookie)
	if code := again.waitExit(t, 20*time.Second); code != 2 {
		t.Fatalf("cookie after session_timeout: exit %d\n%s", code, again.proc.out.String())
	}
}

// TestDenyRoaming: with deny_roaming the cookie works only from the address that logged in.
func TestDenyRoaming(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "listen_host = \"\"\ndeny_roaming = true\nmax_same_clients = 0")
	cookie := authenticate(t, s, vpnUser, vpnPass) // from 127.0.0.1
	same := connectCookie(t, s, cookie)
	same.proc.cmd.Process.Signal(syscall.SIGKILL) // no BYE: the cookie stays valid
	same.waitExit(t, 10*time.Second)
	// The same cookie from another source address (the client connects to 10.77.0.1, its source is 10.77.0.1).
	other := launchCookieURL(t, s, cookie, "https://10.77.0.1:8443/")
	if code := other.waitExit(t, 20*time.Second); code != 2 || !strings.Contains(other.proc.out.String(), "Cookie was rejected by server") {
		t.Fatalf("cookie from another address: exit %d\n%s", code, other.proc.out.String())
	}
	if !strings.Contains(s.stderr.String(), "deny_roaming") {
		t.Fatal("refusal not logged")
	}
}

// TestDataRateLimit: tx_data_per_sec holds a download to its rate by dropping, and TCP still delivers every byte.
func TestDataRateLimit(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "tx_data_per_sec = 1000000")
	c := connect(t, s, vpnUser, vpnPass)
	start := time.Now()
	download(t, c, 4<<20, 51)
	// A lower bound only: 4 MiB at 1 MB/s cannot arrive in under 2 s unless the limit is not enforced.
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("4 MiB arrived in %s despite tx_data_per_sec = 1000000", d)
	}
	logout(t, c, s)
	if strings.Contains(s.stderr.String(), "tx_dropped=0 ") {
		t.Fatal("no packet was dropped by the limit")
	}
}

// TestMaxClients: with max_clients sessions, a new login is refused with a message the client shows (connections
// still authenticating do not count; see TestSlowloris).
func TestMaxClients(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	s := startServer(t, ns, newServerDir(t), "max_clients = 1\nmax_same_clients = 0")
	connect(t, s, vpnUser, vpnPass)
	c2 := launch(t, ns, s.pin, vpnUser, vpnPass, s.url())
	if code := c2.waitExit(t, 20*time.Second); code != 1 || configuredRE.MatchString(c2.proc.out.String()) ||
		!strings.Contains(c2.proc.out.String(), "maximum number of clients") {
		t.Fatalf("second client: exit %d\n%s", code, c2.proc.out.String())
	}
	waitFor(t, 5*time.Second, "the refusal in the log", func() bool {
		return strings.Contains(s.stderr.String(), "reached maximum client limit")
	})
}
