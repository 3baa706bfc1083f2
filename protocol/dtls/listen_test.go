package dtls

import (
	"bytes"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/cstp"
)

// A SO_REUSEPORT group: the sockets share one port, the kernel spreads clients over them (each socket's reader
// serves its share), and every client's handshake and records work whichever socket it landed on, both ways.
func TestDTLSReusePortGroup(t *testing.T) {
	pcs, err := Listen("127.0.0.1:0", 4)
	if err != nil {
		t.Fatal(err)
	}
	want := 4
	if runtime.GOOS != "linux" {
		want = 1
	}
	if len(pcs) != want {
		t.Fatalf("%d sockets, want %d", len(pcs), want)
	}
	for _, pc := range pcs[1:] {
		if pc.LocalAddr().String() != pcs[0].LocalAddr().String() {
			t.Fatalf("sockets on %s and %s", pcs[0].LocalAddr(), pc.LocalAddr())
		}
	}
	d := NewServer(pcs, slog.New(slog.DiscardHandler), true)
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	defer d.Close()
	const clients = 16
	used := map[*net.UDPConn]bool{}
	for i := range clients {
		appID := NewAppID()
		psk := bytes.Repeat([]byte{byte(i)}, 32)
		got := make(chan *Conn, 1)
		recs := make(chan []byte, 1)
		cancel := d.Register(appID, psk, nil, func(c *Conn) {
			c.Attach(func(rec []byte) { recs <- bytes.Clone(rec) }, nil)
			got <- c
		})
		client, _ := pskClient(t, pcs[0].LocalAddr(), appID, psk, pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
		var c *Conn
		select {
		case c = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d: no association", i)
		}
		used[c.assoc.pc] = true
		msg := append([]byte{cstp.Data}, bytes.Repeat([]byte{byte(i)}, 500)...)
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case rec := <-recs:
			if !bytes.Equal(rec, msg) {
				t.Fatalf("client %d: record of %d bytes, want %d", i, len(rec), len(msg))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d: record not delivered", i)
		}
		if err := c.WriteRecord(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := client.Read(buf); err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("client %d: reply of %d bytes, %v", i, n, err)
		}
		client.Close()
		cancel()
	}
	if want > 1 && len(used) < 2 {
		t.Errorf("%d clients all landed on one socket of %d", clients, len(pcs))
	}
	d.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}
