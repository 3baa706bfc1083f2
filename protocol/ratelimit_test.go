package protocol

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"ocgate/config"
)

func TestTokenBucket(t *testing.T) {
	if newTokenBucket(0) != nil || !newTokenBucket(0).allow(1<<30) {
		t.Fatal("rate 0 must mean no limit")
	}
	b := newTokenBucket(1 << 20) // burst 256 KiB
	n := 0
	for b.allow(1400) {
		n++
	}
	if burst := n * 1400; burst < 250<<10 || burst > 260<<10 {
		t.Fatalf("burst %d bytes, want about 256 KiB", burst)
	}
	b.last = b.last.Add(-time.Second) // a second later the bucket is full again
	if !b.allow(200 << 10) {
		t.Fatal("the bucket did not refill")
	}
}

// rate_limit_ms paces new connections (a lower bound only: the pace cannot be faster than configured).
func TestRateLimitPacesConnections(t *testing.T) {
	ts := startTestServer(t, func(c *config.Config) { c.RateLimitMS = 300 })
	start := time.Now()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for range 3 {
		resp, err := hc.Get("https://" + ts.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("3 connections accepted in %s with rate_limit_ms = 300", d)
	}
}
