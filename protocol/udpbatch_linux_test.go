package protocol

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
