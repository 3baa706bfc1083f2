package protocol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"net"
	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// clientHello builds a DTLS ClientHello datagram as openconnect sends it: session_id = App-ID, and optionally the
// private extension 48018 that 7.x clients used instead.
func clientHello(sid []byte, extID []byte) []byte {
	var body []byte
	body = append(body, 0xfe, 0xfd)                     // client_version DTLS 1.2
	body = append(body, bytes.Repeat([]byte{7}, 32)...) // random
	body = append(body, byte(len(sid)))
	body = append(body, sid...)
	body = append(body, 0)                            // cookie
	body = append(body, 0, 4, 0x00, 0xa9, 0xcc, 0xab) // cipher suites
	body = append(body, 1, 0)                         // compression: null
	var ext []byte
	ext = binary.BigEndian.AppendUint16(ext, 65281)
	ext = binary.BigEndian.AppendUint16(ext, 1)
	ext = append(ext, 0)
	if extID != nil {
		ext = binary.BigEndian.AppendUint16(ext, extAppID)
		ext = binary.BigEndian.AppendUint16(ext, uint16(1+len(extID)))
		ext = append(ext, byte(len(extID)))
		ext = append(ext, extID...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	hs := []byte{1, 0, byte(len(body) >> 8), byte(len(body)), 0, 0, 0, 0, 0, 0, byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

func TestHelloAppID(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, 32)
	other := bytes.Repeat([]byte{0xcd}, 32)
	tests := []struct {
		name string
		pkt  []byte
		want []byte
	}{
		{"session id", clientHello(id, nil), id},
		{"extension 48018 wins", clientHello(other, id), id},
		{"short session id", clientHello(id[:16], nil), nil},
		{"no session id", clientHello(nil, nil), nil},
		{"truncated extensions", clientHello(id, nil)[:95], id},
		{"truncated session id", clientHello(id, nil)[:70], nil},
		{"too short", clientHello(id, nil)[:40], nil},
	}
	for _, tc := range tests {
		if !isClientHello(tc.pkt) && tc.want != nil {
			t.Errorf("%s: not recognised as a ClientHello", tc.name)
			continue
		}
		got, ok := helloAppID(tc.pkt)
		if ok != (tc.want != nil) || ok && !bytes.Equal(got[:], tc.want) {
			t.Errorf("%s: helloAppID = %x, %v; want %x", tc.name, got, ok, tc.want)
		}
	}
}

func FuzzHelloAppID(f *testing.F) {
	f.Add(clientHello(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if isClientHello(b) {
			helloAppID(b)
		}
	})
}

// Bogus datagrams are dropped, counted, and allocate nothing.
func TestDTLSDropsStrangers(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := newDTLSServer(pc, slog.New(slog.DiscardHandler))
	done := make(chan error)
	go func() { done <- d.Serve() }()
	var id [appIDLen]byte
	id[0] = 1
	cancel := d.register(id, make([]byte, 32), nil, func(*dtlsConn) {})
	defer cancel()
	c, _ := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	defer c.Close()
	c.Write([]byte("garbage"))
	c.Write(clientHello(bytes.Repeat([]byte{9}, 32), nil)) // unknown App-ID
	c.Write(make([]byte, 100))
	deadline := time.Now().Add(5 * time.Second)
	for d.stats.dropped.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped = %d, want 3", d.stats.dropped.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d.stats.started.Load() != 0 {
		t.Fatal("a handshake started for a stranger")
	}
	from := c.LocalAddr().(*net.UDPAddr).AddrPort()
	bogus := clientHello(bytes.Repeat([]byte{9}, 32), nil)
	if n := testing.AllocsPerRun(100, func() { d.dispatch(bogus, from) }); n != 0 {
		t.Fatalf("%v allocations per bogus ClientHello", n)
	}
	d.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// A pion DTLS client against the whole server side: demultiplexing by App-ID (the client "resumes" a session
// whose id is the App-ID, which puts it in the ClientHello like openconnect does), pion's handshake, then the fast
// path both ways, for both suite families.
func TestDTLSFastPathWithPionClient(t *testing.T) {
	for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256} {
		t.Run(suite.String(), func(t *testing.T) {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			d := newDTLSServer(pc, slog.New(slog.DiscardHandler))
			d.fastPath = true
			go d.Serve()
			defer d.Close()
			appID := newAppID()
			psk := bytes.Repeat([]byte{0x42}, 32)
			got := make(chan *dtlsConn, 2)
			recs := make(chan []byte, 4)
			// As the tunnel does (dtlsEstablished): attached from the callback.
			cancel := d.register(appID, psk, nil, func(c *dtlsConn) {
				c.attach(func(rec []byte) { recs <- bytes.Clone(rec) }, func(err error) { t.Errorf("pion failed: %v", err) })
				got <- c
			})
			defer cancel()

			cpc, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			defer cpc.Close()
			secret := make([]byte, 48)
			store := &clientStore{s: dtls.Session{ID: appID[:], Secret: secret, Version: 1, IsClient: true,
				CipherSuiteID: suite, PSKHash: sha256.Sum256(psk), IdentityHint: []byte("psk")}}
			client, err := dtls.ClientWithOptions(cpc, pc.LocalAddr(),
				dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), dtls.WithPSKIdentityHint([]byte("psk")),
				dtls.WithCipherSuites(suite), dtls.WithSessionStore(store), dtls.WithServerName("vpn"),
				dtls.WithExtendedMasterSecret(dtls.DisableExtendedMasterSecret))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			ctx, cancelCtx := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancelCtx()
			if err := client.HandshakeContext(ctx); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			// A record sent the moment the client's handshake is done, maybe before the server has attached.
			early := append([]byte{cstp.Data}, "early"...)
			if _, err := client.Write(early); err != nil {
				t.Fatal(err)
			}
			var c *dtlsConn
			select {
			case c = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("no association established")
			}
			if c.fast == nil {
				t.Fatal("the fast path is not on")
			}
			select {
			case rec := <-recs:
				if !bytes.Equal(rec, early) {
					t.Fatalf("first record %q, want %q", rec, early)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the record sent right after the handshake was not delivered")
			}
			buf := make([]byte, 2048)
			for i := range 50 {
				msg := append([]byte{cstp.Data}, bytes.Repeat([]byte{byte(i)}, 1000+i)...)
				if _, err := client.Write(msg); err != nil {
					t.Fatal(err)
				}
				select {
				case rec := <-recs:
					if !bytes.Equal(rec, msg) {
						t.Fatalf("record %d client→server: got %d bytes, want %d", i, len(rec), len(msg))
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("record %d client→server: not delivered", i)
				}
				reply := append([]byte{cstp.DPDResp}, msg[1:]...)
				if err := c.WriteRecord(reply); err != nil {
					t.Fatal(err)
				}
				client.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := client.Read(buf)
				if err != nil || !bytes.Equal(buf[:n], reply) {
					t.Fatalf("record %d server→client: %d bytes, %v", i, n, err)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); c.pion.Load() != nil; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("pion was not retired after the fast path's first records")
				}
			}
			if n := testing.AllocsPerRun(100, func() { c.fast.Write(buf[:1400]) }); n != 0 {
				t.Errorf("fast write: %v allocations per record", n)
			}
			// Receiving: a sealed record through the demultiplexer to the handler allocates nothing.
			c.attach(func([]byte) {}, nil)
			var sc dtlsrec.Scratch
			sealer, err := dtlsrec.New(client)
			if err != nil {
				t.Fatal(err)
			}
			rec := make([]byte, 0, 2048)
			from := cpc.LocalAddr().(*net.UDPAddr).AddrPort()
			if n := testing.AllocsPerRun(100, func() { d.dispatch(sealer.Seal(&sc, rec[:0], buf[:1400]), from) }); n != 0 {
				t.Errorf("fast read: %v allocations per record", n)
			}
			c.Close()
			c.attach(func([]byte) { t.Error("a record was delivered after Close") }, nil)
			d.dispatch(sealer.Seal(&sc, rec[:0], buf[:100]), from)
		})
	}
}

type clientStore struct{ s dtls.Session }

func (c *clientStore) Set([]byte, dtls.Session) error   { return nil }
func (c *clientStore) Del([]byte) error                 { return nil }
func (c *clientStore) Get([]byte) (dtls.Session, error) { return c.s, nil }
