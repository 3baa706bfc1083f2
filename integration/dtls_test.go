package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pion "github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"

	"ocgate/integration/internal/stream"
)

var dtlsUp = regexp.MustCompile(`Established DTLS connection \(using GnuTLS\)\. Ciphersuite \(DTLS1\.2\)-\(PSK\)-\(([A-Z0-9-]+)\)`)

// sessionBytes reads the DTLS byte counters of the "session disconnected" log line of the server.
func sessionBytes(t *testing.T, s *server) (rx, tx, dtlsRx, dtlsTx int64) {
	t.Helper()
	m := regexp.MustCompile(`msg="session disconnected".* rx=(\d+) tx=(\d+) dtls_rx=(\d+) dtls_tx=(\d+)`).FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("no session disconnected line with counters in the server log")
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	return n(m[1]), n(m[2]), n(m[3]), n(m[4])
}

// logout stops the client (SIGTERM: it sends its BYE) and waits for the server to log the session's end.
func logout(t *testing.T, c *client, s *server) {
	t.Helper()
	c.proc.stop(10 * time.Second)
	waitFor(t, 10*time.Second, "the session to end", func() bool {
		return strings.Contains(s.stderr.String(), `msg="session disconnected"`)
	})
}

// download fetches n bytes of stream seed from the target through the ocproxy client and checks the hash.
func download(t *testing.T, c *client, n int64, seed uint64) {
	t.Helper()
	checkDownload(t, c.ns, fmt.Sprintf("--socks5-hostname 127.0.0.1:%d", c.socksPort), "http://10.77.0.1:8080", n, seed)
}

// upload sends n bytes of stream seed to the target's sink through the ocproxy client and checks its hash.
func upload(t *testing.T, c *client, n int64, seed uint64) {
	t.Helper()
	checkUpload(t, c.ns, fmt.Sprintf("--socks5-hostname 127.0.0.1:%d", c.socksPort), "http://10.77.0.1:8080", n, seed)
}

// checkDownload runs curl in ns (with curlFlags, e.g. a SOCKS proxy, or none for a real TUN) to fetch n bytes of
// stream seed from base's /bytes and checks their SHA-256.
func checkDownload(t *testing.T, ns *netns, curlFlags, base string, n int64, seed uint64) {
	t.Helper()
	out, code := ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
		"curl -sS --fail --max-time 100 -g %s '%s/bytes?n=%d&seed=%d' | sha256sum", curlFlags, base, n, seed))
	if want := stream.SHA256(n, seed); code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("download from %s: exit %d, sha256 %q, want %s", base, code, out, want)
	}
}

// checkUpload runs curl in ns to send n bytes of stream seed to base's /sink and checks the hash the sink saw.
func checkUpload(t *testing.T, ns *netns, curlFlags, base string, n int64, seed uint64) {
	t.Helper()
	file := filepath.Join(tempDir(t), "upload")
	f, _ := os.Create(file)
	stream.Write(f, n, seed)
	f.Close()
	out, code := ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
		"curl -sS --fail --max-time 100 -g %s -T '%s' '%s/sink'", curlFlags, file, base))
	if want := fmt.Sprintf("%s %d", stream.SHA256(n, seed), n); code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("upload to %s: exit %d, sink says %q, want %q", base, code, out, want)
	}
}

// TestDTLSTransfer: DTLS comes up with the PSK mode and carries the 64 MiB down / 16 MiB up.
func TestDTLSTransfer(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]`)
	c := connect(t, s, vpnUser, vpnPass)
	out := c.proc.out.String()
	// The "Configured as" line says "DTLS established" when it comes before the client's MTU probe finished.
	if !dtlsUp.MatchString(out) || !regexp.MustCompile(`with SSL connected and DTLS (connected|established)`).MatchString(out) {
		t.Fatalf("DTLS did not come up:\n%s", out)
	}
	if !strings.Contains(out, "No change in MTU after detection (was 1434)") {
		t.Errorf("the client's MTU probe did not confirm 1434 (DPD echo):\n%s", out)
	}
	download(t, c, 64<<20, 11)
	upload(t, c, 16<<20, 12)
	// After answering the MTU probe the server sends DTLS keepalives, which wake openconnect from the one-second
	// sleep it otherwise may take before configuring the tunnel (protocol/tunnel_dtls.go, dtlsRecord).
	if !strings.Contains(c.proc.out.String(), "Got DTLS Keepalive") {
		t.Errorf("no DTLS keepalive reached the client after its MTU probe:\n%s", c.proc.out.String())
	}
	logout(t, c, s)
	rx, tx, drx, dtx := sessionBytes(t, s)
	if dtx < 64<<20 || drx < 16<<20 || dtx < tx*9/10 || drx < rx*9/10 {
		t.Fatalf("bytes over DTLS: rx %d of %d, tx %d of %d; want the transfers on DTLS", drx, rx, dtx, tx)
	}
	// The fast path's keys came from the handshake's own secrets (protocol/dtls/keys.go), not from the fallback
	// through pion's exported state, which works as well but costs ~20 KB a session set-up.
	if logs := s.stdout.String() + s.stderr.String(); strings.Contains(logs, "keyed from pion's state") {
		t.Errorf("the stock client's DTLS association was keyed from pion's state, not the handshake's secrets")
	}
}

// TestDTLSPionRecords: with dtls_fast_path = false, pion's record layer carries the same transfers (the other
// DTLS tests run on the default fast path).
func TestDTLSPionRecords(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "dtls_fast_path = false")
	c := connect(t, s, vpnUser, vpnPass)
	if out := c.proc.out.String(); !dtlsUp.MatchString(out) || !strings.Contains(out, "No change in MTU after detection (was 1434)") {
		t.Fatalf("DTLS did not come up with its MTU confirmed:\n%s", out)
	}
	download(t, c, 64<<20, 14)
	upload(t, c, 16<<20, 15)
	logout(t, c, s)
	if _, tx, _, dtx := sessionBytes(t, s); dtx < 64<<20 || dtx < tx*9/10 {
		t.Fatalf("%d of %d bytes sent over DTLS", dtx, tx)
	}
}

// TestDTLSWithTLS12: a TLS 1.2 control channel (openconnect's GnuTLS without EMS) still keys DTLS.
func TestDTLSWithTLS12(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), ``)
	c := connect(t, s, vpnUser, vpnPass, "--gnutls-priority", "NORMAL:-VERS-TLS1.3:%COMPAT")
	out := c.proc.out.String()
	if !strings.Contains(out, "with ciphersuite (TLS1.2)") || !dtlsUp.MatchString(out) {
		t.Fatalf("want TLS 1.2 and DTLS:\n%s", out)
	}
	download(t, c, 8<<20, 13)
}

// TestDTLSFallbackAndRecovery: UDP to the server is blocked mid-transfer; the transfer goes on over TLS with the
// right hash; once UDP is let through again the client re-handshakes and DTLS carries traffic again.
func TestDTLSFallbackAndRecovery(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "dpd = 2\nswitch_to_tcp_timeout = 2")
	c := connect(t, s, vpnUser, vpnPass)
	if !dtlsUp.MatchString(c.proc.out.String()) {
		t.Fatalf("DTLS did not come up:\n%s", c.proc.out.String())
	}
	const n, seed = 48 << 20, 21
	file := filepath.Join(tempDir(t), "down")
	// The target paces the stream (4 MB/s) so that it spans the outage without the client's window closing.
	dl := ns.start(nil, "curl", "-sS", "--fail", "--max-time", "120", "--socks5-hostname",
		fmt.Sprintf("127.0.0.1:%d", c.socksPort), "-o", file, fmt.Sprintf("http://10.77.0.1:8080/bytes?n=%d&seed=%d&rate=4000000", n, seed))
	size := func() int64 {
		fi, err := os.Stat(file)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	waitFor(t, 20*time.Second, "the download to start", func() bool { return size() > 4<<20 })

	ns.must("ip", "netns", "exec", ns.name, "nft", "add table inet block; add chain inet block in { type filter hook input priority 0; }; add rule inet block in udp dport 8443 drop")
	blocked := true
	defer func() {
		if blocked {
			exec.Command("ip", "netns", "exec", ns.name, "nft", "delete table inet block").Run()
		}
	}()
	waitFor(t, 30*time.Second, "the client to declare DTLS dead", func() bool {
		return strings.Contains(c.proc.out.String(), "DTLS Dead Peer Detection detected dead peer!")
	})
	before := size()
	waitFor(t, 20*time.Second, "the download to go on over TLS", func() bool { return size() > before+4<<20 })
	ns.must("ip", "netns", "exec", ns.name, "nft", "delete table inet block")
	blocked = false
	waitFor(t, 90*time.Second, "DTLS to come back", func() bool {
		return len(dtlsUp.FindAllString(c.proc.out.String(), -1)) >= 2
	})
	select {
	case <-dl.done:
	case <-time.After(60 * time.Second):
		t.Fatal("download did not finish")
	}
	if dl.err != nil {
		t.Fatalf("curl: %v %s", dl.err, dl.out.String())
	}
	out, _ := ns.output(30*time.Second, "sha256sum", file)
	if want := stream.SHA256(n, seed); !strings.HasPrefix(out, want) {
		t.Fatalf("after fallback and recovery: sha256 %q, want %s", out, want)
	}
	if strings.Count(s.stderr.String(), `msg="DTLS established"`) < 2 {
		t.Fatalf("the server did not see the second DTLS handshake")
	}
	download(t, c, 4<<20, 22) // and DTLS carries traffic again
}

// TestLegacyDTLS: with dtls_psk = false the server answers the client's X-DTLS-Master-Secret and
// X-DTLS12-CipherSuite (the Cisco AnyConnect way): the client resumes the session it was given and DTLS carries
// the traffic.
func TestLegacyDTLS(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "dtls_psk = false")
	c := connect(t, s, vpnUser, vpnPass)
	out := c.proc.out.String()
	if !strings.Contains(out, "X-DTLS12-CipherSuite: ECDHE-RSA-AES128-GCM-SHA256") ||
		!strings.Contains(out, "Established DTLS connection (using GnuTLS). Ciphersuite (DTLS1.2)-(ECDHE-RSA)-(AES-128-GCM).") {
		t.Fatalf("legacy DTLS did not come up:\n%s", out)
	}
	download(t, c, 16<<20, 41)
	logout(t, c, s)
	if _, tx, _, dtx := sessionBytes(t, s); dtx < 16<<20 || dtx < tx*9/10 {
		t.Fatalf("%d of %d bytes sent over DTLS", dtx, tx)
	}
}

// TestDTLSHelloReplay: once openconnect's DTLS is up, a ClientHello carrying its session's App-ID comes from
// another source port and runs a whole handshake there (without the PSK, which a replaying attacker does not
// have). The session's DTLS must carry on untouched: a download afterwards crosses DTLS, and the server never
// falls back to TLS. (The server used to close the association as soon as such a hello arrived.)
func TestDTLSHelloReplay(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), `route = ["10.77.0.0/24"]`)
	c := connect(t, s, vpnUser, vpnPass)
	out := c.proc.out.String()
	if !dtlsUp.MatchString(out) {
		t.Fatalf("DTLS did not come up:\n%s", out)
	}
	m := regexp.MustCompile(`X-DTLS-App-ID: ([0-9a-fA-F]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no X-DTLS-App-ID in the client's output:\n%s", out)
	}
	appID, _ := hex.DecodeString(m[1])
	port := s.port
	if m := regexp.MustCompile(`X-DTLS-Port: (\d+)`).FindStringSubmatch(out); m != nil {
		port, _ = strconv.Atoi(m[1])
	}

	var pc *net.UDPConn
	err := ns.inside(func() (err error) {
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	wrongPSK := make([]byte, 32)
	rand.Read(wrongPSK)
	hc, err := pion.ClientWithOptions(pc, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		pion.WithPSK(func([]byte) ([]byte, error) { return wrongPSK, nil }),
		pion.WithPSKIdentityHint([]byte("psk")),
		pion.WithCipherSuites(pion.TLS_PSK_WITH_AES_128_GCM_SHA256, pion.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256),
		pion.WithExtendedMasterSecret(pion.DisableExtendedMasterSecret),
		pion.WithClientHelloMessageHook(func(ch handshake.MessageClientHello) handshake.Message {
			ch.SessionID = appID
			return &ch
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := hc.HandshakeContext(ctx); err == nil {
		t.Fatal("a handshake without the session's PSK succeeded")
	}
	cancel()
	hc.Close()
	waitFor(t, 15*time.Second, "the server to see the foreign handshake fail", func() bool {
		return strings.Contains(s.stderr.String(), "DTLS handshake failed") ||
			strings.Contains(s.stderr.String(), `msg="DTLS down`)
	})

	download(t, c, 16<<20, 51)
	logout(t, c, s)
	if strings.Contains(s.stderr.String(), `msg="DTLS down`) {
		t.Fatalf("the server dropped the session's DTLS:\n%s", s.stderr.String())
	}
	if _, tx, _, dtx := sessionBytes(t, s); dtx < 16<<20 || dtx < tx*9/10 {
		t.Fatalf("%d of %d bytes sent over DTLS after the foreign ClientHello", dtx, tx)
	}
}
