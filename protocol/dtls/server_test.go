package dtls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
	"testing"
	"time"

	pion "github.com/pion/dtls/v3"
)

// Bogus datagrams are dropped, counted, and allocate nothing.
func TestDTLSDropsStrangers(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := NewServer(pc, slog.New(slog.DiscardHandler), false)
	done := make(chan error)
	go func() { done <- d.Serve() }()
	var id AppID
	id[0] = 1
	cancel := d.Register(id, make([]byte, 32), nil, func(*Conn) {})
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
	for _, suite := range []pion.CipherSuiteID{pion.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, pion.TLS_PSK_WITH_AES_128_GCM_SHA256} {
		t.Run(suite.String(), func(t *testing.T) {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			d := NewServer(pc, slog.New(slog.DiscardHandler), true)
			go d.Serve()
			defer d.Close()
			appID := NewAppID()
			psk := bytes.Repeat([]byte{0x42}, 32)
			got := make(chan *Conn, 2)
			recs := make(chan []byte, 4)
			// As the tunnel does: attached from the callback.
			cancel := d.Register(appID, psk, nil, func(c *Conn) {
				c.Attach(func(rec []byte) { recs <- bytes.Clone(rec) }, func(err error) { t.Errorf("pion failed: %v", err) })
				got <- c
			})
			defer cancel()

			cpc, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			defer cpc.Close()
			secret := make([]byte, 48)
			store := &clientStore{s: pion.Session{ID: appID[:], Secret: secret, Version: 1, IsClient: true,
				CipherSuiteID: suite, PSKHash: sha256.Sum256(psk), IdentityHint: []byte("psk")}}
			client, err := pion.ClientWithOptions(cpc, pc.LocalAddr(),
				pion.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), pion.WithPSKIdentityHint([]byte("psk")),
				pion.WithCipherSuites(suite), pion.WithSessionStore(store), pion.WithServerName("vpn"),
				pion.WithExtendedMasterSecret(pion.DisableExtendedMasterSecret))
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
			var c *Conn
			select {
			case c = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("no association established")
			}
			if !c.Fast() {
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
			c.Attach(func([]byte) {}, nil)
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
			c.Attach(func([]byte) { t.Error("a record was delivered after Close") }, nil)
			d.dispatch(sealer.Seal(&sc, rec[:0], buf[:100]), from)
		})
	}
}

type clientStore struct{ s pion.Session }

func (c *clientStore) Set([]byte, pion.Session) error   { return nil }
func (c *clientStore) Del([]byte) error                 { return nil }
func (c *clientStore) Get([]byte) (pion.Session, error) { return c.s, nil }
