package dtlsrec

// Fuzz targets for the record layer: Open takes datagrams straight from the network, so any bytes must be refused
// without a panic; what Seal writes must open to the same plaintext; and records must agree with pion's, in both
// directions, for the suites the fast path takes over (AES-GCM, ChaCha20-Poly1305).
//
//	go test -run '^$' -fuzz '^FuzzOpen$' -fuzztime 30s ./protocol/dtlsrec

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"golang.org/x/crypto/chacha20poly1305"
)

// fixedLayers returns fresh layers with fixed keys, one per suite layout, so that a record sealed by one seed
// opens on the next run too.
func fixedLayers(t testing.TB) map[string]*Layer {
	block, err := aes.NewCipher(bytes.Repeat([]byte{1}, 16))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := chacha20poly1305.New(bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	iv12 := bytes.Repeat([]byte{3}, 12)
	chacha := &Layer{epoch: 1, remoteEpoch: 1, sendAEAD: cc, recvAEAD: cc, sendIV: iv12, recvIV: iv12}
	chacha.sendSeq.Store(seqStart)
	return map[string]*Layer{"aes-gcm": NewForTest(gcm, []byte{1, 2, 3, 4}, 1), "chacha20": chacha}
}

// FuzzOpen: arbitrary datagrams never panic Open, never open unless they are a record sealed with the key (the
// seeds hold such records), and Open writes nothing past the record its header declares.
func FuzzOpen(f *testing.F) {
	var sc Scratch
	for _, l := range fixedLayers(f) {
		f.Add(l.Seal(&sc, nil, []byte("\x00E\x00\x00\x14")))
		f.Add(l.Seal(&sc, nil, nil))
	}
	f.Add([]byte{AppData, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40})
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, l := range fixedLayers(t) {
			in := bytes.Clone(b)
			pt, ok := l.Open(in)
			if !ok {
				continue
			}
			n := int(in[11])<<8 | int(in[12])
			if want := n - (l.Overhead() - HeaderLen); len(pt) != want {
				t.Fatalf("%s: plaintext %d bytes from a %d-byte body, want %d", name, len(pt), n, want)
			}
			if !bytes.Equal(in[HeaderLen+n:], b[HeaderLen+n:]) {
				t.Fatalf("%s: Open wrote past the record", name)
			}
			if _, ok := l.Open(bytes.Clone(b)); ok {
				t.Fatalf("%s: the same record opened twice", name)
			}
		}
	})
}

// FuzzSealOpen: what Seal writes opens to the same plaintext, and any one flipped bit makes it refused.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte("\x00E\x00\x00\x14"), uint16(0), uint8(1))
	f.Add(bytes.Repeat([]byte{0x45}, 1400), uint16(13), uint8(0x80))
	f.Add([]byte{}, uint16(5), uint8(4))
	f.Fuzz(func(t *testing.T, pt []byte, at uint16, mask uint8) {
		if len(pt) > 16384 {
			pt = pt[:16384]
		}
		for name, l := range fixedLayers(t) {
			var sc Scratch
			rec := l.Seal(&sc, nil, pt)
			if len(rec) != len(pt)+l.Overhead() {
				t.Fatalf("%s: record %d bytes for %d of plaintext, want +%d", name, len(rec), len(pt), l.Overhead())
			}
			if mask != 0 {
				bad := bytes.Clone(rec)
				i := int(at) % len(bad)
				bad[i] ^= mask
				// Bytes 1-2 (the version) are not checked: Open authenticates the DTLS 1.2 version it expects,
				// not the header's, so such a record opens to the same plaintext or not at all.
				if got, ok := l.Open(bad); ok && !((i == 1 || i == 2) && bytes.Equal(got, pt)) {
					t.Fatalf("%s: a record with byte %d changed opened: %x", name, i, got)
				}
				l = fixedLayers(t)[name] // the replay window must not refuse the intact record below
			}
			got, ok := l.Open(rec)
			if !ok || !bytes.Equal(got, pt) {
				t.Fatalf("%s: sealed %x, opened %x (ok %v)", name, pt, got, ok)
			}
		}
	})
}

// capturingConn hands what pion writes to the test once capture is on, instead of sending it.
type capturingConn struct {
	net.PacketConn
	capture atomic.Bool
	out     chan []byte
}

func (c *capturingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.capture.Load() {
		c.out <- bytes.Clone(b)
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// pionPair is a pion client and server after their PSK handshake over loopback UDP, with our record layer for the
// server side: the client's records are captured rather than sent, and ours reach the client through the
// server's socket.
type pionPair struct {
	client     *dtls.Conn
	clientPC   *capturingConn
	serverPC   net.PacketConn
	serverSide *Layer
}

func newPionPair(t testing.TB, suite dtls.CipherSuiteID) *pionPair {
	spc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spc.Close() })
	cpcRaw, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpcRaw.Close() })
	cpc := &capturingConn{PacketConn: cpcRaw, out: make(chan []byte, 4)}
	psk := dtls.WithPSK(func([]byte) ([]byte, error) { return bytes.Repeat([]byte{0x42}, 32), nil })
	ems := dtls.WithExtendedMasterSecret(dtls.DisableExtendedMasterSecret)
	server, err := dtls.ServerWithOptions(spc, cpcRaw.LocalAddr(), psk, dtls.WithCipherSuites(suite), ems)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	client, err := dtls.ClientWithOptions(cpc, spc.LocalAddr(), psk, dtls.WithPSKIdentityHint([]byte("psk")),
		dtls.WithCipherSuites(suite), ems)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	l, err := New(server)
	if err != nil {
		t.Fatal(err)
	}
	cpc.capture.Store(true)
	return &pionPair{client: client, clientPC: cpc, serverPC: spc, serverSide: l}
}

// FuzzPion: a record pion seals opens with our layer to the same plaintext, and a record our layer seals is read
// by pion as the same plaintext.
func FuzzPion(f *testing.F) {
	pairs := map[string]*pionPair{
		"aes-gcm":  newPionPair(f, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		"chacha20": newPionPair(f, dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256),
	}
	f.Add([]byte("\x00E\x00\x00\x14"))
	f.Add(bytes.Repeat([]byte{0x45}, 1400))
	rbuf := make([]byte, 16384+64)
	f.Fuzz(func(t *testing.T, pt []byte) {
		if len(pt) == 0 || len(pt) > 1500 {
			return // the tunnel's records carry at least the type byte and at most an MTU
		}
		for name, p := range pairs {
			if _, err := p.client.Write(pt); err != nil {
				t.Fatalf("%s: pion Write: %v", name, err)
			}
			var rec []byte
			select {
			case rec = <-p.clientPC.out:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: pion wrote no record", name)
			}
			got, ok := p.serverSide.Open(rec)
			if !ok || !bytes.Equal(got, pt) {
				t.Fatalf("%s: pion sealed %x, we opened %x (ok %v)", name, pt, got, ok)
			}

			var sc Scratch
			ours := p.serverSide.Seal(&sc, nil, pt)
			if _, err := p.serverPC.WriteTo(ours, p.clientPC.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := p.client.Read(rbuf)
			if err != nil || !bytes.Equal(rbuf[:n], pt) {
				t.Fatalf("%s: we sealed %x, pion read %x (%v)", name, pt, rbuf[:n], err)
			}
		}
	})
}
