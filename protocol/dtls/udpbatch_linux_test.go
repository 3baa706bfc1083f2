package dtls

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// recvmmsg batches: contents and sources of IPv4 and IPv6 datagrams, truncated ones refused, nothing allocated.
func TestUDPReader(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			lo := "127.0.0.1:0"
			if network == "udp6" {
				lo = "[::1]:0"
			}
			pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(lo)))
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer pc.Close()
			src, err := net.DialUDP(network, nil, pc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			srcAddr := src.LocalAddr().(*net.UDPAddr).AddrPort()
			r, err := newUDPReader(pc, 4, 100)
			if err != nil {
				t.Fatal(err)
			}
			want := [][]byte{[]byte("one"), bytes.Repeat([]byte{2}, 100), bytes.Repeat([]byte{3}, 101), []byte("four"), []byte("five")}
			for _, b := range want {
				if _, err := src.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			var got [][]byte
			truncated := 0
			for len(got)+truncated < len(want) {
				n, err := r.Read()
				if err != nil || n < 1 || n > 4 {
					t.Fatalf("Read = %d, %v", n, err)
				}
				for i := range n {
					b, from, ok := r.Datagram(i)
					if !ok {
						truncated++
						continue
					}
					if from != srcAddr {
						t.Errorf("datagram from %v, want %v", from, srcAddr)
					}
					got = append(got, bytes.Clone(b))
				}
			}
			if truncated != 1 || len(got) != 4 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) ||
				!bytes.Equal(got[2], want[3]) || !bytes.Equal(got[3], want[4]) {
				t.Fatalf("got %q with %d truncated, want %q without the 101-byte one", got, truncated, want)
			}
			allocs := testing.AllocsPerRun(50, func() {
				src.Write(want[0])
				if n, err := r.Read(); err != nil || n != 1 {
					t.Fatalf("Read = %d, %v", n, err)
				}
				if _, _, ok := r.Datagram(0); !ok {
					t.Fatal("datagram refused")
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per read", allocs)
			}
		})
	}
}

// sendmmsg with UDP GSO: runs of equal-sized datagrams (with a shorter last one), a longer one starting a new
// run, more than fit one GSO buffer; from an IPv4 socket and from a dual-stack IPv6 one to an IPv4 peer. Every
// datagram arrives whole and in order, and nothing is allocated per batch.
func TestUDPWriter(t *testing.T) {
	defer udpGSOOff.Store(udpGSOOff.Load())
	for _, tc := range []struct{ listen, gso string }{{"127.0.0.1:0", "gso"}, {":0", "gso"}, {"127.0.0.1:0", "nogso"}} {
		listen := tc.listen
		t.Run(listen+"/"+tc.gso, func(t *testing.T) {
			udpGSOOff.Store(tc.gso == "nogso")
			laddr, err := net.ResolveUDPAddr("udp", listen)
			if err != nil {
				t.Fatal(err)
			}
			pc, err := net.ListenUDP("udp", laddr) // ":0": a dual-stack AF_INET6 socket
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			sink.SetReadBuffer(4 << 20)
			w, err := newUDPWriter(pc, sink.LocalAddr().(*net.UDPAddr).AddrPort(), 32)
			if err != nil {
				t.Fatal(err)
			}
			var batch [][]byte
			sizes := []int{1200, 1200, 1200, 700, 1300, 1300, 1300, 1300, 100, 100, 5}
			for len(sizes) < 32 {
				sizes = append(sizes, 1400)
			}
			for i, n := range sizes {
				batch = append(batch, bytes.Repeat([]byte{byte(i)}, n))
			}
			r, err := newUDPReader(sink, 32, 2048)
			if err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				if err := w.Send(batch); err != nil {
					t.Fatalf("round %d: Send: %v", round, err)
				}
				for got := 0; got < len(batch); {
					n, err := r.Read()
					if err != nil {
						t.Fatal(err)
					}
					for i := range n {
						b, _, ok := r.Datagram(i)
						if !ok || !bytes.Equal(b, batch[got]) {
							t.Fatalf("round %d: datagram %d: %d bytes, want %d of %d", round, got, len(b), len(batch[got]), got)
						}
						got++
					}
				}
			}
			if tc.gso == "gso" && udpGSOOff.Load() {
				t.Log("this kernel refused UDP_SEGMENT: sent without GSO")
			}
			allocs := testing.AllocsPerRun(20, func() {
				if err := w.Send(batch[:8]); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < 8; {
					n, _ := r.Read()
					got += n
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per batch", allocs)
			}
		})
	}
}
