package integration

// Abuse tests: unauthenticated attackers from many source addresses (127.1.x.y, all local on the namespace's lo)
// against the real server process, while the stock client logs in and moves data. Every attack is bounded in
// connections, datagrams and time, and stays inside the test's namespace. The client's login latency and the
// server's fds and RSS are logged before, during and after; the assertions are about outcomes (the login works,
// the bytes arrive, usage stays bounded and returns), never about timings.

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const attackSources = 40

// attackSource is the i-th attacker address.
func attackSource(i int) string { return fmt.Sprintf("127.1.%d.%d", i/200, i%200+1) }

// usage is what the server process holds.
type usage struct{ fds, rssKiB int }

func (u usage) String() string { return fmt.Sprintf("%d fds, %d KiB RSS", u.fds, u.rssKiB) }

func usageOf(t *testing.T, s *server) usage {
	t.Helper()
	pid := s.proc.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return usage{fds: len(fds), rssKiB: rssKiB(t, pid)}
}

// timedLogin logs the stock client in and returns it with the time it took to be configured.
func timedLogin(t *testing.T, s *server) (*client, time.Duration) {
	t.Helper()
	start := time.Now()
	c := connect(t, s, vpnUser, vpnPass)
	return c, time.Since(start)
}

// startIdleServer starts a server (config added to its routes) and the target in a new namespace, logs the stock client in and out once, and
// returns the idle login's latency and the server's usage after it.
func startIdleServer(t *testing.T, config string) (*netns, *server, time.Duration, usage) {
	t.Helper()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "route = [\"10.77.0.0/24\"]\n"+config)
	c, idleLogin := timedLogin(t, s)
	c.proc.stop(10 * time.Second)
	return ns, s, idleLogin, usageOf(t, s)
}

// attack runs bounded attack connections from attackSources addresses in a namespace until stopped.
type attack struct {
	ns       *netns
	target   string
	stop     chan struct{}
	wg       sync.WaitGroup
	attempts atomic.Int64 // connections tried (the server resets those it sheds, often before connect returns)
	opened   atomic.Int64 // ... established
	served   atomic.Int64 // ... that got past the server's admission (their mode says so)
	stopped  sync.Once
}

// startAttack runs, for each source, up to perSource connections one after another, one every pace, each handed
// to mode in a goroutine of its own; mode returns when the connection ends or stop closes, and reports whether
// the server served it (as opposed to shedding it).
func startAttack(t *testing.T, ns *netns, target string, perSource int, pace time.Duration,
	mode func(src int, c net.Conn, stop <-chan struct{}) bool) *attack {
	a := &attack{ns: ns, target: target, stop: make(chan struct{})}
	t.Cleanup(a.end)
	for i := range attackSources {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attackSource(i))}, Timeout: 2 * time.Second}
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for range perSource {
				select {
				case <-a.stop:
					return
				case <-tick.C:
				}
				var c net.Conn
				a.attempts.Add(1)
				if ns.inside(func() (err error) { c, err = d.Dial("tcp", target); return err }) != nil {
					continue
				}
				a.opened.Add(1)
				a.wg.Add(1)
				go func() {
					defer a.wg.Done()
					defer c.Close()
					if mode(i, c, a.stop) {
						a.served.Add(1)
					}
				}()
			}
		}()
	}
	return a
}

// end stops the attack and waits for its connections to close.
func (a *attack) end() {
	a.stopped.Do(func() { close(a.stop) })
	a.wg.Wait()
}

// holdUntil blocks until stop closes or the server closes c (a read returns).
func holdUntil(c net.Conn, stop <-chan struct{}) {
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(done) }()
	select {
	case <-stop:
	case <-done:
	}
}

// tlsUp does the client side of a TLS handshake within 10 s; false means the server refused the connection.
func tlsUp(c net.Conn) (*tls.Conn, bool) {
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if tc.Handshake() != nil {
		return nil, false
	}
	tc.SetDeadline(time.Time{})
	return tc, true
}

// waitUsage waits until the server's fds are at most max and returns its usage then.
func waitUsage(t *testing.T, s *server, max int, what string) usage {
	t.Helper()
	var u usage
	waitFor(t, 60*time.Second, what, func() bool { u = usageOf(t, s); return u.fds <= max })
	return u
}

// TestSlowloris: thousands of connections from 40 addresses finish TLS and then trickle a request's header a
// byte every 2 s, or hold a connection idle with or without TLS. The stock client still logs in and moves data;
// the server's fds stay bounded by the per-address caps and come back afterwards. (Before the pre-authentication
// limits, rate_limit_ms served the attack's backlog first and max_clients counted every connection: no login got
// through.)
func TestSlowloris(t *testing.T) {
	// Not parallel: the attack loads both cores, and a neighbour's download through ocproxy then fails
	// ("transfer closed"); alone, the only client it can disturb is the one it measures.
	// Bans off: the caps alone must hold (an attacker can stay under the ban score by pacing itself).
	ns, s, idleLogin, base := startIdleServer(t, "max_ban_score = 0")

	a := startAttack(t, ns, fmt.Sprintf("127.0.0.1:%d", s.port), 400, 50*time.Millisecond,
		func(src int, c net.Conn, stop <-chan struct{}) bool {
			switch src % 3 {
			case 0: // TCP only, not a byte
				holdUntil(c, stop)
				return true
			case 1: // TLS, then nothing
				tc, ok := tlsUp(c)
				if ok {
					holdUntil(tc, stop)
				}
				return ok
			}
			tc, ok := tlsUp(c) // TLS, then a request a byte every 2 s
			if !ok {
				return false
			}
			if _, err := io.WriteString(tc, "POST /auth HTTP/1.1\r\nX-Slow: "); err != nil {
				return true
			}
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return true
				case <-tick.C:
					if _, err := tc.Write([]byte("x")); err != nil {
						return true
					}
				}
			}
		})
	// Under way: the server holds many attack connections.
	waitFor(t, 60*time.Second, "2,000 attack connections", func() bool { return a.attempts.Load() > 2000 })
	waitFor(t, 30*time.Second, "the server to hold many of them", func() bool { return usageOf(t, s).fds > base.fds+200 })
	c, attackLogin := timedLogin(t, s)
	download(t, c, 4<<20, 81)
	during := usageOf(t, s)
	a.end()
	t.Logf("attack: %d connections tried from %d addresses, %d established, %d served", a.attempts.Load(), attackSources,
		a.opened.Load(), a.served.Load())
	t.Logf("login: %s idle, %s under attack", idleLogin.Round(time.Millisecond), attackLogin.Round(time.Millisecond))
	// 40 addresses × max_unauth_per_ip (16), plus the client's tunnel and some being shed.
	if limit := base.fds + attackSources*16 + 64; during.fds > limit {
		t.Errorf("the server held %d fds during the attack, want at most %d", during.fds, limit)
	}
	after := waitUsage(t, s, base.fds+8, "the server's fds to return near the baseline")
	t.Logf("server: %s before, %s during, %s after", base, during, after)
	download(t, c, 1<<20, 82)
}

// TestHandshakeFlood: never-finished TLS handshakes (a ClientHello's first bytes, then silence) and connections
// sending random bytes, from 40 addresses, 60 connections each. The stock client logs in and moves data
// meanwhile, and addresses sending random bytes are banned: their connections alone (a point each) stay under
// max_ban_score (80); their failed handshakes take them over it.
func TestHandshakeFlood(t *testing.T) {
	// Not parallel: the attack loads both cores, and a neighbour's download through ocproxy then fails
	// ("transfer closed"); alone, the only client it can disturb is the one it measures.
	ns, s, idleLogin, base := startIdleServer(t, "")

	var refused atomic.Int64
	a := startAttack(t, ns, fmt.Sprintf("127.0.0.1:%d", s.port), 60, 50*time.Millisecond,
		func(src int, c net.Conn, stop <-chan struct{}) bool {
			junk := make([]byte, 300)
			rand.Read(junk)
			if src%2 == 0 {
				// A TLS record header announcing a 512-byte ClientHello, and a little of it.
				copy(junk, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
				junk = junk[:64]
			}
			if _, err := c.Write(junk); err != nil {
				refused.Add(1)
				return false
			}
			holdUntil(c, stop)
			return true
		})
	waitFor(t, 60*time.Second, "the flood to be under way", func() bool { return a.attempts.Load() > 2000 })
	c, attackLogin := timedLogin(t, s)
	download(t, c, 4<<20, 83)
	during := usageOf(t, s)
	bannedRE := regexp.MustCompile(`msg="address banned" remote=127\.1\.`)
	waitFor(t, 60*time.Second, "an attacking address to be banned", func() bool { return bannedRE.MatchString(s.stderr.String()) })
	a.end()
	t.Logf("flood: %d connections tried from %d addresses, %d established, %d refused at the first write, %d addresses banned",
		a.attempts.Load(), attackSources, a.opened.Load(), refused.Load(), len(bannedRE.FindAllString(s.stderr.String(), -1)))
	t.Logf("login: %s idle, %s under the flood", idleLogin.Round(time.Millisecond), attackLogin.Round(time.Millisecond))
	after := waitUsage(t, s, base.fds+8, "the server's fds to return near the baseline")
	t.Logf("server: %s before, %s during, %s after", base, during, after)
}

// TestHostileAuthXML: oversized and deeply nested authentication documents get a clear 4xx and end only their
// own connection; the stock client logs in and moves data afterwards.
func TestHostileAuthXML(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]`)
	base := usageOf(t, s)
	post := func(body string) string {
		conn, err := ns.dial(fmt.Sprintf("127.0.0.1:%d", s.port))
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(20 * time.Second))
		go fmt.Fprintf(tc, "POST /auth HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		line, _ := bufio.NewReader(tc).ReadString('\n')
		return strings.TrimSpace(line)
	}
	nested := func(depth int) string {
		return `<?xml version="1.0"?><config-auth client="vpn" type="auth-reply">` + strings.Repeat("<a>", depth) +
			strings.Repeat("</a>", depth) + `</config-auth>`
	}
	for _, tc := range []struct{ name, body, want string }{
		{"oversized", `<config-auth>` + strings.Repeat("<x>yyyy</x>", 100<<10) + `</config-auth>`, "HTTP/1.1 413 "},
		{"nested 5,000 deep", nested(5000), "HTTP/1.1 400 "},
		{"nested 9,000 deep, unclosed", strings.Repeat("<a>", 9000), "HTTP/1.1 400 "},
		{"entity expansion", `<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "` + strings.Repeat("c", 1000) +
			`">]><config-auth>` + strings.Repeat("&b;", 1000) + `</config-auth>`, "HTTP/1.1 400 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := post(tc.body); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	c, login := timedLogin(t, s)
	download(t, c, 1<<20, 84)
	t.Logf("login after the hostile documents: %s; server %s before, %s after", login.Round(time.Millisecond), base, usageOf(t, s))
}

// TestDTLSDatagramFlood: while openconnect's DTLS carries a download, 10,000 datagrams reach the DTLS port: random
// bytes and forged DTLS records from other ports, and the client's own captured datagrams replayed from its
// address and port. The download completes over DTLS, and the server never drops the session's DTLS.
func TestDTLSDatagramFlood(t *testing.T) {
	// Not parallel: the attack loads both cores, and a neighbour's download through ocproxy then fails
	// ("transfer closed"); alone, the only client it can disturb is the one it measures.
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]`)
	c := connect(t, s, vpnUser, vpnPass)
	if !dtlsUp.MatchString(c.proc.out.String()) {
		t.Fatalf("DTLS did not come up:\n%s", c.proc.out.String())
	}
	// Capture the client's datagrams to the DTLS port (IPv4 packets on lo) while a first download runs.
	captured := captureUDP(t, ns, s.port, 64, func() { download(t, c, 2<<20, 85) })
	if len(captured) == 0 {
		t.Fatal("no DTLS datagram of the client captured")
	}
	base := usageOf(t, s)

	var sent atomic.Int64
	var floodTime time.Duration
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		sendFlood(t, ns, s.port, captured, 10000, &sent)
		floodTime = time.Since(start)
	}()
	download(t, c, 64<<20, 86)
	dlTime := time.Since(start)
	<-done
	during := usageOf(t, s)
	logout(t, c, s)
	t.Logf("flood: %d datagrams sent in %s, during a 64 MiB download of %s (%d distinct captured datagrams replayed); server %s before, %s after",
		sent.Load(), floodTime.Round(time.Millisecond), dlTime.Round(time.Millisecond), len(captured), base, during)
	if strings.Contains(s.stderr.String(), `msg="DTLS down`) {
		t.Fatalf("the server dropped the session's DTLS:\n%s", s.stderr.String())
	}
	if _, tx, _, dtx := sessionBytes(t, s); dtx < 64<<20 || dtx < tx*8/10 {
		t.Fatalf("%d of %d bytes sent over DTLS during the flood", dtx, tx)
	}
}

// captureUDP runs fn while capturing up to max IPv4 packets on the namespace's lo that carry UDP to port (and not
// from it), and returns them whole.
func captureUDP(t *testing.T, ns *netns, port, max int, fn func()) [][]byte {
	t.Helper()
	var fd int
	err := ns.inside(func() (err error) {
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_IP)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "capture")
	var mu sync.Mutex
	var pkts [][]byte
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 65536)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil {
				return
			}
			p := buf[:n]
			if n < 28 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_UDP {
				continue
			}
			udp := p[int(p[0]&0xf)*4:]
			if int(binary.BigEndian.Uint16(udp[2:4])) != port || int(binary.BigEndian.Uint16(udp[0:2])) == port {
				continue
			}
			mu.Lock()
			if len(pkts) < max {
				pkts = append(pkts, append([]byte(nil), p...))
			}
			mu.Unlock()
		}
	}()
	fn()
	// Closing the file does not wake a blocked read(2) on a packet socket; a shutdown does.
	syscall.Shutdown(fd, syscall.SHUT_RDWR)
	f.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		// The reader ends with the next packet; its copy of pkts is guarded.
	}
	mu.Lock()
	defer mu.Unlock()
	return pkts
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendFlood sends n datagrams to the DTLS port from inside ns: a third random bytes and a third forged DTLS
// records (content type 23, DTLS 1.2, epoch 1) from 40 other addresses, a third the captured packets replayed
// whole through a raw socket (so from the client's own address and port).
func sendFlood(t *testing.T, ns *netns, port int, captured [][]byte, n int, sent *atomic.Int64) {
	var raw int
	var udps []*net.UDPConn
	err := ns.inside(func() (err error) {
		if raw, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW); err != nil {
			return err
		}
		for i := range attackSources {
			u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(attackSource(i))})
			if err != nil {
				return err
			}
			udps = append(udps, u)
		}
		return nil
	})
	defer func() {
		syscall.Close(raw)
		for _, u := range udps {
			u.Close()
		}
	}()
	if err != nil {
		t.Errorf("setting up the flood: %v", err)
		return
	}
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	lo := &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	buf := make([]byte, 1200)
	for i := range n {
		var err error
		switch i % 3 {
		case 0:
			rand.Read(buf[:100+i%1000])
			_, err = udps[i%len(udps)].WriteToUDP(buf[:100+i%1000], dst)
		case 1:
			rec := buf[:13+64]
			rand.Read(rec)
			copy(rec, []byte{23, 0xfe, 0xfd, 0, 1})
			binary.BigEndian.PutUint16(rec[11:13], 64)
			_, err = udps[i%len(udps)].WriteToUDP(rec, dst)
		case 2:
			err = syscall.Sendto(raw, captured[i%len(captured)], 0, lo)
		}
		if err == nil {
			sent.Add(1)
		}
		if i%20 == 19 {
			time.Sleep(4 * time.Millisecond) // about 5,000 datagrams a second, so that the flood spans the download
		}
	}
}

// TestSIGTERMDrain: with server_drain_ms, SIGTERM closes the listener at once while the session keeps moving data;
// then the client gets TERMINATE and exits, and the server exits within the drain plus its 5 s bound.
func TestSIGTERMDrain(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "route = [\"10.77.0.0/24\"]\nserver_drain_ms = 3000")
	c := connect(t, s, vpnUser, vpnPass)
	start := time.Now()
	s.proc.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "new connections to be refused", func() bool {
		conn, err := ns.dial(fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	download(t, c, 1<<20, 87) // the session goes on while draining
	code := c.waitExit(t, 20*time.Second)
	select {
	case <-s.proc.done:
	case <-time.After(3*time.Second + 10*time.Second):
		t.Fatal("the server did not exit within server_drain_ms + 10 s")
	}
	t.Logf("client exit %d, server exit %d, %s after SIGTERM", code, s.proc.cmd.ProcessState.ExitCode(), time.Since(start).Round(time.Millisecond))
	if !strings.Contains(s.stderr.String(), "draining") || s.proc.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("server exit %d; log:\n%s", s.proc.cmd.ProcessState.ExitCode(), s.stderr.String())
	}
	if out := c.proc.out.String(); !strings.Contains(strings.ToLower(out), "terminate") {
		t.Fatalf("the client did not report the server's TERMINATE:\n%s", out)
	}
}
