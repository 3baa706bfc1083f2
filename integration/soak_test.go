package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSoak: stock clients log in, move data, are killed (the cookie stays valid) and reconnect with their cookie,
// move data again and log out, in a loop for OCGATE_SOAK (default 20 s; integration/soak.sh runs it longer). Then
// the server's goroutines, open files and resident memory (its own /metrics) return to what they were before the
// first login, within stated tolerances.
func TestSoak(t *testing.T) {
	t.Parallel()
	d := 20 * time.Second
	if v := os.Getenv("OCGATE_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("OCGATE_SOAK=%q: %v", v, err)
		}
	}
	ns := newNetns(t)
	ns.startTarget()
	s := startServer(t, ns, newServerDir(t), "metrics_listen = \"127.0.0.1:9617\"\nmax_same_clients = 0\nroute = [\"10.77.0.0/24\"]")
	type sample struct{ goroutines, fds, rssMiB float64 }
	take := func() sample {
		return sample{metric(t, ns, "go_goroutines"), metric(t, ns, "process_open_fds"),
			metric(t, ns, "process_resident_memory_bytes") / (1 << 20)}
	}
	before := take()
	cycles, bytes := 0, int64(0)
	for end := time.Now().Add(d); time.Now().Before(end); cycles++ {
		// Two sessions at once; one is killed without a goodbye and comes back with its cookie.
		c1, c2 := authenticate(t, s, vpnUser, vpnPass), authenticate(t, s, vpnUser, vpnPass)
		a, b := connectCookie(t, s, c1), connectCookie(t, s, c2)
		seed := uint64(100 + 3*cycles)
		download(t, a, 2<<20, seed)
		upload(t, b, 1<<20, seed+1)
		a.proc.cmd.Process.Signal(syscall.SIGKILL)
		a.waitExit(t, 10*time.Second)
		a = connectCookie(t, s, c1)
		download(t, a, 2<<20, seed+2)
		bytes += 5 << 20
		a.proc.stop(10 * time.Second) // logs out
		b.proc.stop(10 * time.Second)
	}
	waitFor(t, 20*time.Second, "every session to end", func() bool {
		return metric(t, ns, "ocgate_sessions_ended_total") >= float64(2*cycles) && !strings.Contains(sessionsLine(t, ns), " 1")
	})
	var after sample
	// Goroutines of ended flows and sessions wind down within seconds; the tolerances cover what the runtime and
	// the metrics endpoint keep (idle HTTP connections, timers) and the heap's retained growth.
	waitFor(t, 30*time.Second, "goroutines, files and memory to return to their baseline", func() bool {
		after = take()
		return after.goroutines <= before.goroutines+10 && after.fds <= before.fds+5 && after.rssMiB <= before.rssMiB+48
	})
	t.Logf("soak: %s, %d cycles (each: 2 logins, 3 connects with a cookie, one of them after a kill), %d MiB moved; before %+v, after %+v",
		d, cycles, bytes>>20, before, after)
	if cycles == 0 {
		t.Fatal("no cycle completed")
	}
}

// sessionsLine is the ocgate_sessions lines of /metrics, joined: one " 1" or more means a session is still up.
func sessionsLine(t *testing.T, ns *netns) string {
	t.Helper()
	out, _ := ns.output(10*time.Second, "curl", "-sS", "http://127.0.0.1:9617/metrics")
	var b strings.Builder
	for _, l := range readLines(out) {
		if strings.HasPrefix(l, "ocgate_sessions{") && !strings.HasSuffix(l, " 0") {
			b.WriteString(" 1")
		}
	}
	return b.String()
}
