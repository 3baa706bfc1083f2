package dtls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/cstp"
	"ocgate/protocol/dtlsrec"
)

// Bogus datagrams are dropped, counted, and allocate nothing.
func TestDTLSDropsStrangers(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := NewServer([]*net.UDPConn{pc}, slog.New(slog.DiscardHandler), false)
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
	waitFor(t, "3 datagrams dropped", func() bool { return d.stats.dropped.Load() >= 3 })
	if d.stats.started.Load() != 0 {
		t.Fatal("a handshake started for a stranger")
	}
	// The unknown App-ID's ClientHello got a fatal alert (unknown.go), so that the client gives up DTLS at once.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	alert := make([]byte, 64)
	n, err := c.Read(alert)
	want := alertHandshakeFailure
	copy(want[1:11], clientHello(bytes.Repeat([]byte{9}, 32), nil)[1:11]) // the ClientHello's version, epoch, sequence
	if err != nil || !bytes.Equal(alert[:n], want[:]) {
		t.Fatalf("answer to an unknown App-ID: % x, %v; want the fatal alert % x", alert[:n], err, want)
	}
	from := c.LocalAddr().(*net.UDPAddr).AddrPort()
	bogus := clientHello(bytes.Repeat([]byte{9}, 32), nil)
	if n := testing.AllocsPerRun(100, func() { d.dispatch(pc, bogus, from) }); n != 0 {
		t.Fatalf("%v allocations per bogus ClientHello", n)
	}
	d.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// An idle client (no records after its handshake) has pion retired after pionQuietRetireDelay, without the tunnel
// hearing of an error; its records still arrive through the fast path afterwards.
func TestDTLSPionRetiredWhenQuiet(t *testing.T) {
	defer func(d time.Duration) { pionQuietRetireDelay = d }(pionQuietRetireDelay)
	pionQuietRetireDelay = 50 * time.Millisecond
	client, _, got, recs := fastPathClient(t, pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
	c := established(t, got)
	waitFor(t, "pion to be retired with no record from the client", func() bool { return c.pion.Load() == nil })
	msg := append([]byte{cstp.Data}, "after"...)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	select {
	case rec := <-recs:
		if !bytes.Equal(rec, msg) {
			t.Fatalf("record %q, want %q", rec, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the record sent after pion's retirement was not delivered")
	}
}

// fastPathClient starts a fast-path server on loopback with one registration, whose associations arrive on got and
// whose records go to recs (attached from the callback, as the tunnel does), and a pion client for it that has
// completed its handshake.
func fastPathClient(t *testing.T, suite pion.CipherSuiteID) (client *pion.Conn, cpc *recordingConn, got chan *Conn, recs chan []byte) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := NewServer([]*net.UDPConn{pc}, slog.New(slog.DiscardHandler), true)
	go d.Serve()
	t.Cleanup(func() { d.Close() })
	appID := NewAppID()
	psk := bytes.Repeat([]byte{0x42}, 32)
	got = make(chan *Conn, 2)
	recs = make(chan []byte, 4)
	cancel := d.Register(appID, psk, nil, func(c *Conn) {
		c.Attach(func(rec []byte) { recs <- bytes.Clone(rec) }, func(err error) { t.Errorf("pion failed: %v", err) })
		got <- c
	})
	t.Cleanup(cancel)
	client, cpc = pskClient(t, pc.LocalAddr(), appID, psk, suite)
	return client, cpc, got, recs
}

// established waits for the association of fastPathClient's client.
func established(t *testing.T, got chan *Conn) *Conn {
	t.Helper()
	select {
	case c := <-got:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no association established")
	}
	return nil
}

// A pion DTLS client against the whole server side: demultiplexing by App-ID (the client "resumes" a session
// whose id is the App-ID, which puts it in the ClientHello like openconnect does), pion's handshake, then the fast
// path both ways, for both suite families.
func TestDTLSFastPathWithPionClient(t *testing.T) {
	for _, suite := range []pion.CipherSuiteID{pion.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, pion.TLS_PSK_WITH_AES_128_GCM_SHA256} {
		t.Run(suite.String(), func(t *testing.T) {
			client, cpc, got, recs := fastPathClient(t, suite)
			// A record sent the moment the client's handshake is done, maybe before the server has attached.
			early := append([]byte{cstp.Data}, "early"...)
			if _, err := client.Write(early); err != nil {
				t.Fatal(err)
			}
			c := established(t, got)
			if !c.Fast() {
				t.Fatal("the fast path is not on")
			}
			if n := c.assoc.d.stats.keysFromState.Load(); n != 0 {
				t.Errorf("the fast path was keyed from pion's state %d times, not from the handshake's secrets", n)
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
			waitFor(t, "pion to be retired after the fast path's first records", func() bool { return c.pion.Load() == nil })
			if n := testing.AllocsPerRun(100, func() { c.fast.Write(buf[:1400]) }); n != 0 {
				t.Errorf("fast write: %v allocations per record", n)
			}
			// Receiving: a sealed record through the demultiplexer to the handler allocates nothing.
			c.Attach(func([]byte) {}, nil)
			d, pc := c.assoc.d, c.assoc.pc
			var sc dtlsrec.Scratch
			sealer, err := dtlsrec.New(client)
			if err != nil {
				t.Fatal(err)
			}
			rec := make([]byte, 0, 2048)
			from := cpc.LocalAddr().(*net.UDPAddr).AddrPort()
			if n := testing.AllocsPerRun(100, func() { d.dispatch(pc, sealer.Seal(&sc, rec[:0], buf[:1400]), from) }); n != 0 {
				t.Errorf("fast read: %v allocations per record", n)
			}
			c.Close()
			c.Attach(func([]byte) { t.Error("a record was delivered after Close") }, nil)
			d.dispatch(pc, sealer.Seal(&sc, rec[:0], buf[:100]), from)
		})
	}
}

type clientStore struct{ s pion.Session }

func (c *clientStore) Set([]byte, pion.Session) error   { return nil }
func (c *clientStore) Del([]byte) error                 { return nil }
func (c *clientStore) Get([]byte) (pion.Session, error) { return c.s, nil }

// recordingConn is a client's socket that keeps a copy of the first datagram it sends (the ClientHello).
type recordingConn struct {
	*net.UDPConn
	mu    sync.Mutex
	first []byte
}

func (r *recordingConn) WriteTo(p []byte, a net.Addr) (int, error) {
	r.mu.Lock()
	if r.first == nil {
		r.first = bytes.Clone(p)
	}
	r.mu.Unlock()
	return r.UDPConn.WriteTo(p, a)
}

// pskClient runs a pion DTLS client's handshake against server from a new local socket, with the App-ID in the
// ClientHello like openconnect (it "resumes" a session whose id is the App-ID).
func pskClient(t *testing.T, server net.Addr, appID AppID, psk []byte, suite pion.CipherSuiteID) (*pion.Conn, *recordingConn) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	rc := &recordingConn{UDPConn: pc}
	store := &clientStore{s: pion.Session{ID: appID[:], Secret: make([]byte, 48), Version: 1, IsClient: true,
		CipherSuiteID: suite, PSKHash: sha256.Sum256(psk), IdentityHint: []byte("psk")}}
	c, err := pion.ClientWithOptions(rc, server,
		pion.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), pion.WithPSKIdentityHint([]byte("psk")),
		pion.WithCipherSuites(suite), pion.WithSessionStore(store), pion.WithServerName("vpn"),
		pion.WithExtendedMasterSecret(pion.DisableExtendedMasterSecret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	return c, rc
}

// The ClientHello replay finding: a client's ClientHello, captured and sent again from another address, must not
// take its established association away (it used to be closed the moment the hello arrived); a client that
// really moved (NAT rebinding) completes a new handshake from its new address and takes over.
func TestDTLSReplayedHelloKeepsAssociation(t *testing.T) {
	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "fast path", false: "pion records"}[fast]
		t.Run(name, func(t *testing.T) {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			d := NewServer([]*net.UDPConn{pc}, slog.New(slog.DiscardHandler), fast)
			go d.Serve()
			defer d.Close()
			appID := NewAppID()
			psk := bytes.Repeat([]byte{0x42}, 32)
			type record struct {
				c   *Conn
				rec []byte
			}
			conns := make(chan *Conn, 4)
			recs := make(chan record, 16)
			cancel := d.Register(appID, psk, nil, func(c *Conn) {
				if c.Fast() {
					c.Attach(func(rec []byte) { recs <- record{c, bytes.Clone(rec)} }, nil)
				} else {
					go func() {
						buf := make([]byte, RecordBufLen)
						for {
							n, err := c.ReadRecord(buf)
							if err != nil {
								return
							}
							recs <- record{c, bytes.Clone(buf[:n])}
						}
					}()
				}
				conns <- c
			})
			defer cancel()
			expect := func(from *pion.Conn, want *Conn, msg string) {
				t.Helper()
				rec := append([]byte{cstp.Data}, msg...)
				if _, err := from.Write(rec); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-recs:
					if got.c != want || !bytes.Equal(got.rec, rec) {
						t.Fatalf("%s: got %q on another association", msg, got.rec)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: not delivered", msg)
				}
			}
			waitConn := func() *Conn {
				t.Helper()
				select {
				case c := <-conns:
					return c
				case <-time.After(5 * time.Second):
					t.Fatal("no association established")
					return nil
				}
			}

			victim, vrc := pskClient(t, pc.LocalAddr(), appID, psk, pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
			vc := waitConn()
			expect(victim, vc, "before the replay")

			// The replay: the victim's ClientHello, from another address, twice (a retransmission).
			attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer attacker.Close()
			vrc.mu.Lock()
			hello := vrc.first
			vrc.mu.Unlock()
			if !isClientHello(hello) {
				t.Fatalf("first datagram % x is not a ClientHello", hello[:min(len(hello), 16)])
			}
			for range 2 {
				if _, err := attacker.WriteTo(hello, pc.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the replayed hello to start a handshake", func() bool { return d.stats.started.Load() >= 2 })
			expect(victim, vc, "after the replay")
			if d.stats.started.Load() != 2 {
				t.Errorf("%d handshakes started, want 2 (the retransmitted hello goes to the one in progress)", d.stats.started.Load())
			}

			// NAT rebinding: the same client (same PSK and App-ID) from a new address takes over.
			moved, _ := pskClient(t, pc.LocalAddr(), appID, psk, pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
			mc := waitConn()
			expect(moved, mc, "from the new address")
			select {
			case <-vc.assoc.done:
			default:
				t.Fatal("the replaced association is still open")
			}
			if a := d.assocOf(vc.RemoteAddr()); a != nil {
				t.Fatal("the replaced association still has its address")
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
