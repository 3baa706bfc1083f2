package protocol

import (
	"bufio"
	"errors"
	"io"
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

// Field names match whatever their case; a line longer than the reader's buffer (within the limits) is read
// whole; an input that ends inside a line is an unexpected EOF.
func TestReadRequestHeader(t *testing.T) {
	long := strings.Repeat("v", 6000)
	in := "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nx-cstp-base-mtu: 1400\r\nX-Long: " + long +
		"\r\nX-Forwarded-For: 192.0.2.1\r\nx-forwarded-for: 192.0.2.2\r\n\r\n"
	r, err := readRequest(bufio.NewReaderSize(strings.NewReader(in), 4096))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.get("X-CSTP-Base-MTU"); got != "1400" {
		t.Errorf("X-CSTP-Base-MTU = %q", got)
	}
	if got := r.get("x-long"); got != long {
		t.Errorf("X-Long has %d bytes, want %d", len(got), len(long))
	}
	if got := r.header.Values("X-Forwarded-For"); len(got) != 2 || got[0] != "192.0.2.1" || got[1] != "192.0.2.2" {
		t.Errorf("X-Forwarded-For values %q", got)
	}
	if got := r.get("X-Absent"); got != "" {
		t.Errorf("an absent field reads %q", got)
	}
	for _, cut := range []string{"GET / HTTP/1.1\r\nHost: x", "GET / HTTP/1.1\r\nX: " + long} {
		if _, err := readRequest(bufio.NewReaderSize(strings.NewReader(cut), 4096)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%.30q...: %v, want an unexpected EOF", cut, err)
		}
	}
}

func BenchmarkReadRequest(b *testing.B) {
	in := "CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\nHost: 10.99.0.1:4443\r\nUser-Agent: Open AnyConnect VPN Agent v9.01\r\n" +
		"Cookie: webvpn=0123456789abcdef0123456789abcdef\r\nX-CSTP-Version: 1\r\nX-CSTP-Hostname: host\r\n" +
		"X-CSTP-Accept-Encoding: oc-lz4,lzs\r\nX-CSTP-Base-MTU: 1500\r\nX-CSTP-MTU: 1434\r\n" +
		"X-CSTP-Address-Type: IPv6,IPv4\r\nX-CSTP-Full-IPv6-Capability: true\r\nX-DTLS-Master-Secret: 00\r\n" +
		"X-DTLS-CipherSuite: PSK-NEGOTIATE\r\nX-DTLS-Accept-Encoding: oc-lz4,lzs\r\n\r\n"
	rd := strings.NewReader(in)
	br := bufio.NewReaderSize(rd, 4096)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		r, _ := readRequest(br)
		for _, h := range []string{"X-CSTP-Accept-Encoding", "X-DTLS-Accept-Encoding", "X-DTLS-Master-Secret",
			"X-DTLS12-CipherSuite", "X-CSTP-Hostname", "X-CSTP-Address-Type", "X-CSTP-Base-MTU", "User-Agent"} {
			r.get(h)
		}
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

func TestResponseBytes(t *testing.T) {
	r := &response{status: 200, reason: "OK", body: []byte("<x/>")}
	r.add("Content-Type", "text/xml")
	want := "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: Keep-Alive\r\nContent-Length: 4\r\n\r\n<x/>"
	if got := string(r.bytes()); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	want = "HTTP/1.1 401 Authentication failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
	if got := string(errorResponse(401, "Authentication failed").bytes()); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
