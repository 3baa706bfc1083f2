package protocol

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	in := "POST /auth HTTP/1.1\r\nHost: x\r\nCookie: a=b; webvpn=COOKIE\r\nContent-Length: 5\r\n\r\nhello" +
		"CONNECT /CSCOSSLC/tunnel HTTP/1.1\nCookie: webvpn=C2\n\n"
	br := bufio.NewReader(strings.NewReader(in))
	r, err := readRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	if r.method != "POST" || r.target != "/auth" || string(r.body) != "hello" {
		t.Fatalf("got %q %q %q", r.method, r.target, r.body)
	}
	if c, ok := r.cookie("webvpn"); !ok || c != "COOKIE" {
		t.Fatalf("cookie = %q, %v", c, ok)
	}
	r, err = readRequest(br)
	if err != nil || r.method != "CONNECT" {
		t.Fatalf("second request: %v %v", r, err)
	}
	if c, _ := r.cookie("webvpn"); c != "C2" {
		t.Fatalf("cookie = %q (bare LF line ends must work)", c)
	}
}

func TestReadRequestLimits(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status int
	}{
		{"huge header line", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 20000) + "\r\n\r\n", 431},
		{"huge request line", "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\n\r\n", 431},
		{"too many headers", "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 100) + "\r\n", 431},
		{"huge body", "POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n", 413},
		{"bad content length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
		{"two content lengths", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", 400},
		{"two equal content lengths", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"garbage", "\x16\x03\x01\x00garbage\r\n\r\n", 400},
		{"bad header", "GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400},
		{"bad proto", "GET / SPDY/9\r\n\r\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readRequest(bufio.NewReader(strings.NewReader(tc.in)))
			var he *httpError
			if !errors.As(err, &he) || he.status != tc.status {
				t.Errorf("err = %v, want HTTP %d", err, tc.status)
			}
		})
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReader(strings.NewReader(in))
		for range 4 {
			if _, err := readRequest(br); err != nil {
				return
			}
		}
	})
}
