package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"ocgate/integration/internal/stream"
)

// compressedCounts reads the compression counters of the server's "session disconnected" log line.
func compressedCounts(t *testing.T, s *server) (in, out, bad int64) {
	t.Helper()
	m := regexp.MustCompile(`msg="session disconnected".* compressed_in=(\d+) compressed_out=(\d+) compressed_bad=(\d+)`).
		FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("no session disconnected line with compression counters in the server log")
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	return n(m[1]), n(m[2]), n(m[3])
}

// textDownload fetches n bytes of text stream seed through the client, checks their SHA-256 and returns the rate
// in MB/s.
func textDownload(t *testing.T, c *client, n int64, seed uint64) float64 {
	t.Helper()
	start := time.Now()
	out, code := c.ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
		"curl -sS --fail --max-time 100 --socks5-hostname 127.0.0.1:%d 'http://10.77.0.1:8080/bytes?n=%d&seed=%d&text=1' | sha256sum",
		c.socksPort, n, seed))
	if want := stream.TextSHA256(n, seed); code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("text download: exit %d, sha256 %q, want %s", code, out, want)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

// textUpload sends n bytes of text stream seed to the target's sink through the client and checks the hash the
// sink saw.
func textUpload(t *testing.T, c *client, n int64, seed uint64) {
	t.Helper()
	file := filepath.Join(tempDir(t), "upload.txt")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	stream.WriteText(f, n, seed)
	f.Close()
	out, code := c.ns.output(120*time.Second, "sh", "-c", fmt.Sprintf(
		"curl -sS --fail --max-time 100 --socks5-hostname 127.0.0.1:%d -T '%s' 'http://10.77.0.1:8080/sink'", c.socksPort, file))
	if want := fmt.Sprintf("%s %d", stream.TextSHA256(n, seed), n); code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("text upload: exit %d, sink says %q, want %q", code, out, want)
	}
}

// TestCompression: with compression = true the stock client gets the codec it asked for on each channel, and a
// compressible 64 MiB download and 16 MiB upload arrive intact with most packets compressed both ways. With the
// default (off) no COMPRESSED frame is ever sent although the client offers compression.
func TestCompression(t *testing.T) {
	tests := []struct {
		name   string
		config string
		args   []string
		banner string // in openconnect's "Configured as" line
		on     bool
		dtls   bool // the transfer runs over DTLS
	}{
		// --compression=all offers oc-lz4,lzs,deflate on CSTP: the priority makes LZS win.
		{"LZS on CSTP", "compression = true\ncompression_algo_priority = \"lzs:100\"", []string{"--compression=all", "--no-dtls"},
			"with SSL + LZS connected", true, false},
		{"LZ4 on DTLS", "compression = true", []string{"--compression=stateless"}, "SSL + LZ4 connected and DTLS + LZ4", true, true},
		{"LZS on DTLS", "compression = true\ncompression_algo_priority = \"lzs:100\"", []string{"--compression=all"},
			"SSL + LZS connected and DTLS + LZS", true, true},
		{"off by default", "", []string{"--compression=all"}, "with SSL connected and DTLS", false, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			ns.startTarget()
			s := startServer(t, ns, newServerDir(t), tc.config)
			c := connect(t, s, vpnUser, vpnPass, tc.args...)
			if out := c.proc.out.String(); !strings.Contains(out, tc.banner) {
				t.Fatalf("want %q in the client's output:\n%s", tc.banner, out)
			}
			if tc.dtls {
				waitFor(t, 10*time.Second, "DTLS", func() bool { return dtlsUp.MatchString(c.proc.out.String()) })
			}
			seed := uint64(40 + 2*i)
			rate := textDownload(t, c, 64<<20, seed)
			textUpload(t, c, 16<<20, seed+1)
			logout(t, c, s)
			in, out, bad := compressedCounts(t, s)
			_, _, drx, dtx := sessionBytes(t, s)
			t.Logf("%s: text download %.1f MB/s; compressed frames in %d, out %d, bad %d; DTLS rx %d tx %d",
				tc.name, rate, in, out, bad, drx, dtx)
			if !tc.on {
				if in != 0 || out != 0 || !strings.Contains(s.stderr.String(), `cstp_compression="" dtls_compression=""`) {
					t.Fatalf("compression off, yet compressed frames in %d out %d", in, out)
				}
				return
			}
			// 1400-byte packets: 64 MiB is ~48000 of them, 16 MiB ~12000; most must have gone compressed.
			if out < 30000 || in < 7000 || bad != 0 {
				t.Fatalf("compressed frames in %d (want > 7000), out %d (want > 30000), bad %d", in, out, bad)
			}
			if tc.dtls && (dtx < 32<<20 || drx < 8<<20) {
				t.Fatalf("bytes over DTLS: rx %d, tx %d; want the transfers on DTLS", drx, dtx)
			}
		})
	}
}
