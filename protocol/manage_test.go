package protocol

import (
	"crypto/tls"
	"testing"
	"time"
)

func TestLatencyHistogram(t *testing.T) {
	var h latencyHist
	for _, d := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 3 * time.Second, time.Minute} {
		h.observe(d)
	}
	s := h.snapshot()
	// Buckets are cumulative: <=5ms 1, <=25ms 3, ..., <=5s 4; the minute is only in Count.
	if s.Count != 5 || s.Counts[0] != 1 || s.Counts[2] != 3 || s.Counts[9] != 4 || s.Counts[10] != 4 {
		t.Fatalf("snapshot %+v", s)
	}
	if time.Duration(h.maxNS.Load()) != time.Minute {
		t.Fatalf("max %s", time.Duration(h.maxNS.Load()))
	}
}

func TestTLSCipherName(t *testing.T) {
	got := tlsCipherName(tls.ConnectionState{Version: tls.VersionTLS13, CurveID: tls.X25519, CipherSuite: tls.TLS_AES_128_GCM_SHA256})
	if want := "(TLS1.3)-(X25519)-(TLS_AES_128_GCM_SHA256)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if a, b := safeID("cookie-a"), safeID("cookie-b"); a == b || len(a) != 28 {
		t.Fatalf("safe ids %q %q", a, b)
	}
}
