package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"ocgate/protocol/cstp"
)

// fakeOcserv answers like ocserv 1.1.6 (docs/protocol.md §3.4–3.6, §5.3): a username form, then a password form, a
// padded base64 webvpn cookie, webvpncontext kept across requests, and a CSTP-only CONNECT response.
type fakeOcserv struct {
	t       *testing.T
	ln      net.Listener
	cert    tls.Certificate
	frames  chan []byte // CSTP frames the client sent after CONNECT
	connect chan map[string]string
	tunnel  chan *tls.Conn
}

const fakeCookie = "AA4uSx0rg3lvx5tg6GILK4CyuO2vALcXwqtrw3qhS/Q="

func newFakeOcserv(t *testing.T) *fakeOcserv {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeOcserv{t: t, ln: ln, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		frames: make(chan []byte, 16), connect: make(chan map[string]string, 4), tunnel: make(chan *tls.Conn, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(tls.Server(c, &tls.Config{Certificates: []tls.Certificate{f.cert}}))
		}
	}()
	return f
}

func (f *fakeOcserv) pin() string {
	cert, _ := x509.ParseCertificate(f.cert.Certificate[0])
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "pin-sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

func (f *fakeOcserv) serve(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	reply := func(status string, hdr []string, body string) {
		var b strings.Builder
		fmt.Fprintf(&b, "HTTP/1.1 %s\r\n", status)
		for _, h := range hdr {
			b.WriteString(h + "\r\n")
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
		c.Write([]byte(b.String()))
	}
	form := func(msg, input string) string {
		return `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<config-auth client="vpn" type="auth-request">
<version who="sg">0.1(1)</version>
<auth id="main">
<message>` + msg + `</message>
<form method="post" action="/auth">
` + input + `
</form></auth>
</config-auth>`
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		method, target, _ := strings.Cut(strings.TrimSpace(line), " ")
		target, _, _ = strings.Cut(target, " ")
		hdr := map[string]string{}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimRight(l, "\r\n")
			if l == "" {
				break
			}
			k, v, _ := strings.Cut(l, ": ")
			hdr[k] = v
		}
		n, _ := strconv.Atoi(hdr["Content-Length"])
		body := make([]byte, n)
		io.ReadFull(br, body)
		switch {
		case method == "POST" && target == "/" && bytes.Contains(body, []byte(`type="init"`)):
			reply("200 OK", []string{"Set-Cookie: webvpncontext=ctx123; Secure; HttpOnly"},
				form("Please enter your username.", `<input type="text" name="username" label="Username:" />`))
		case method == "POST" && target == "/auth" && hdr["Cookie"] != "webvpncontext=ctx123":
			reply("401 Authentication failed", nil, "")
		case method == "POST" && target == "/auth" && bytes.Contains(body, []byte("<username>test</username>")):
			reply("200 OK", nil, form("Please enter your password.", `<input type="password" name="password" label="Password:" />`))
		case method == "POST" && target == "/auth" && bytes.Contains(body, []byte("<password>s3cr&lt;t</password>")):
			reply("200 OK", []string{"Set-Cookie: webvpncontext=ctx123; Secure; HttpOnly", "Set-Cookie: webvpn=" + fakeCookie + "; Secure; HttpOnly"},
				`<?xml version="1.0" encoding="UTF-8"?><config-auth client="vpn" type="complete"><version who="sg">0.1(1)</version><auth id="success"><title>SSL VPN Service</title></auth></config-auth>`)
		case method == "POST" && target == "/auth":
			reply("200 OK", nil, form("Login failed.\nPlease enter your password.", `<input type="password" name="password" label="Password:" />`))
		case method == "CONNECT" && hdr["Cookie"] == "webvpn="+fakeCookie:
			f.connect <- hdr
			c.Write([]byte("HTTP/1.1 200 CONNECTED\r\nX-CSTP-Version: 1\r\nX-CSTP-Address: 10.250.77.121\r\n" +
				"X-CSTP-Netmask: 255.255.255.0\r\nX-CSTP-DNS: 10.250.77.1\r\nX-CSTP-DPD: 90\r\nX-CSTP-MTU: 1472\r\n\r\n"))
			c.SetDeadline(time.Time{})
			f.tunnel <- c
			for {
				h := make([]byte, 8)
				if _, err := io.ReadFull(br, h); err != nil {
					return
				}
				p := make([]byte, int(h[4])<<8|int(h[5]))
				if _, err := io.ReadFull(br, p); err != nil {
					return
				}
				f.frames <- append(h, p...)
			}
		case method == "CONNECT":
			c.Write([]byte("HTTP/1.1 401 Cookie is not acceptable\r\n\r\n"))
			return
		default:
			reply("404 Not found", []string{"Connection: close"}, "")
			return
		}
	}
}

func frame(typ byte, p []byte) []byte { return cstp.AppendFrame(nil, typ, p) }

func TestAgainstOcservStyleServer(t *testing.T) {
	f := newFakeOcserv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := Options{URL: "https://" + f.ln.Addr().String() + "/", User: "test", Password: "s3cr<t", Pin: f.pin()}
	s, err := Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hdr := <-f.connect
	for k, want := range map[string]string{"X-CSTP-Version": "1", "X-CSTP-Base-MTU": "1500", "X-CSTP-MTU": "1390",
		"X-CSTP-Address-Type": "IPv6,IPv4", "User-Agent": "Open AnyConnect VPN Agent v9.01-3"} {
		if hdr[k] != want {
			t.Errorf("CONNECT %s = %q, want %q", k, hdr[k], want)
		}
	}
	if _, ok := hdr["X-DTLS-CipherSuite"]; ok {
		t.Error("DTLS headers sent without Options.DTLS")
	}
	if s.Cookie != fakeCookie || s.Addr != netip.MustParseAddr("10.250.77.121") || s.MTU != 1472 || s.DPD != 90*time.Second {
		t.Fatalf("session %+v", s)
	}
	tun := <-f.tunnel

	// Server DPD request: echoed in full. Server DATA: read back.
	tun.Write(frame(cstp.DPDReq, []byte("probe")))
	if got := <-f.frames; !bytes.Equal(got, frame(cstp.DPDResp, []byte("probe"))) {
		t.Fatalf("DPD answer % x", got)
	}
	pkt := ICMPEcho(netip.MustParseAddr("10.250.77.1"), s.Addr, 1, 2, []byte("x"))
	tun.Write(frame(cstp.Data, pkt))
	buf := make([]byte, 2048)
	if n, err := s.ReadPacket(ctx, buf); err != nil || !bytes.Equal(buf[:n], pkt) {
		t.Fatalf("ReadPacket: % x, %v", buf[:n], err)
	}
	// Client DATA, then logout.
	out := UDP(netip.AddrPortFrom(s.Addr, 5000), netip.MustParseAddrPort("10.250.77.1:53"), []byte("q"))
	if err := s.WritePacket(out); err != nil {
		t.Fatal(err)
	}
	if got := <-f.frames; !bytes.Equal(got, frame(cstp.Data, out)) {
		t.Fatalf("server got % x", got)
	}
	s.Close()
	if got := <-f.frames; !bytes.Equal(got, frame(cstp.Disconnect, append([]byte{0xb0}, "Aborted by caller"...))) {
		t.Fatalf("BYE % x", got)
	}
	if !errors.Is(s.Err(), ErrClosed) {
		t.Fatalf("Err %v", s.Err())
	}

	// A server DISCONNECT ends the session with DisconnectError.
	s2, err := Dial(ctx, Options{URL: o.URL, Cookie: fakeCookie, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	<-f.connect
	(<-f.tunnel).Write(frame(cstp.Disconnect, nil))
	select {
	case <-s2.Done():
	case <-ctx.Done():
		t.Fatal("session did not end")
	}
	var de *DisconnectError
	if !errors.As(s2.Err(), &de) || de.Type != cstp.Disconnect {
		t.Fatalf("Err %v", s2.Err())
	}
	s2.Close()

	o.Password = "wrong"
	if _, err := Dial(ctx, o); !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), "Login failed.") {
		t.Fatalf("wrong password: %v", err)
	}
	o.Pin = "pin-sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	var ce *Error
	if _, err := Dial(ctx, o); !errors.As(err, &ce) || ce.Stage != "tls" {
		t.Fatalf("wrong pin: %v", err)
	}
	o.Pin, o.Cookie = "", "bogus"
	o.InsecureSkipVerify = true
	var se *StatusError
	if _, err := Dial(ctx, o); !errors.As(err, &ce) || ce.Stage != "connect" || !errors.As(err, &se) || se.Code != 401 {
		t.Fatalf("bad cookie: %v", err)
	}
}

func TestPackets(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")
	p := ICMPEcho(src, dst, 7, 9, []byte("hello"))
	if checksum(p[:20], 0) != 0 || checksum(p[20:], 0) != 0 {
		t.Fatal("bad checksums")
	}
	p[20] = 0 // make it a reply from dst
	copy(p[12:16], dst.AsSlice())
	if from, id, seq, pl, ok := ParseICMPEchoReply(p); !ok || from != dst || id != 7 || seq != 9 || string(pl) != "hello" {
		t.Fatalf("parse: %v %d %d %q %v", from, id, seq, pl, ok)
	}
	a, b := netip.AddrPortFrom(src, 1000), netip.AddrPortFrom(dst, 53)
	u := UDP(a, b, []byte("abc"))
	if s, d, pl, ok := ParseUDP(u); !ok || s != a || d != b || string(pl) != "abc" {
		t.Fatalf("udp: %v %v %q %v", s, d, pl, ok)
	}
	// The UDP checksum over pseudo header + segment verifies to zero.
	var ph uint32
	for i := 12; i < 20; i += 2 {
		ph += uint32(u[i])<<8 | uint32(u[i+1])
	}
	if checksum(u[20:], ph+17+uint32(len(u)-20)) != 0 {
		t.Fatal("bad UDP checksum")
	}
}
