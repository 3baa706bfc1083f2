// Package redistest runs a real redis-server for the tests of the packages that keep state in Redis
// (protocol/cluster, egress/secmod). It is imported by tests only.
package redistest

import (
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Start runs a redis-server for the test on a unix socket in a temporary directory, without persistence, waits
// until it accepts connections and returns its URL (unix://PATH). The server is killed when the test ends. A
// machine without redis-server fails the test (integration/test.sh installs the Debian package).
func Start(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is needed (Debian package redis-server; integration/test.sh installs it)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "",
		"--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return "unix://" + sock
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling for the server's socket, bounded by the deadline
	}
}
