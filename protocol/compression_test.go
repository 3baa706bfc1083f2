package protocol

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"ocgate/config"
	"ocgate/protocol/compress"
	"ocgate/protocol/cstp"
)

// chooseCodec follows ocserv: nothing without compression = true, else the offered codec of the highest
// priority, names case-insensitive, openconnect's leading comma tolerated, unknown names skipped.
func TestChooseCodec(t *testing.T) {
	tests := []struct {
		name  string
		on    bool
		prio  map[string]int
		offer string
		want  compress.Codec
	}{
		{"off by default", false, nil, "oc-lz4,lzs", nil},
		{"both offered: lz4 wins", true, nil, "oc-lz4,lzs", compress.LZ4},
		{"openconnect 8.20's leading comma", true, nil, ",oc-lz4,lzs,deflate", compress.LZ4},
		{"only lzs", true, nil, "lzs, deflate", compress.LZS},
		{"case and spaces", true, nil, " LZS ", compress.LZS},
		{"bare lz4 is not oc-lz4", true, nil, "lz4", nil},
		{"only deflate", true, nil, "deflate", nil},
		{"nothing offered", true, nil, "", nil},
		{"priority makes lzs win", true, map[string]int{"lzs": 100}, "oc-lz4,lzs", compress.LZS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: &config.Config{Compression: tc.on, CompressionAlgoPriority: tc.prio}}
			if got := s.chooseCodec(tc.offer); got != tc.want {
				t.Errorf("chooseCodec(%q) = %v, want %v", tc.offer, codecName(got), codecName(tc.want))
			}
		})
	}
}

// compressionTunnel is a tunnel with only what the compression paths use: a session, a datapath port and the
// compression settings.
func compressionTunnel(dp *fakeDatapath) (*tunnel, *[]string) {
	var logged []string
	t := &tunnel{
		sess:            &Session{},
		limitedLog:      func(msg string, _ ...any) { logged = append(logged, msg) },
		port:            &fakePort{d: dp},
		cstpCodec:       compress.LZS,
		dtlsCodec:       compress.LZ4,
		compressMin:     256,
		maxDecompressed: 1500,
	}
	return t, &logged
}

// A packet below no_compress_limit or one the codec cannot shrink goes as it is; a compressible one comes out
// as a COMPRESSED frame that decodes back to the packet.
func TestCompressFrame(t *testing.T) {
	tun, _ := compressionTunnel(newFakeDatapath())
	text := []byte(strings.Repeat("compressible text, ", 80))
	noise := make([]byte, 1400)
	rand.NewChaCha8([32]byte{1}).Read(noise)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"compressible", text[:1400], true},
		{"exactly the limit", text[:256], true},
		{"below the limit", text[:255], false},
		{"incompressible", noise, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFrame(cstp.Data, tc.pkt)
			defer f.release()
			z := tun.compressFrame(tun.cstpCodec, f)
			if (z != nil) != tc.want {
				t.Fatalf("compressed: %v, want %v", z != nil, tc.want)
			}
			if z == nil {
				return
			}
			defer z.release()
			typ, n, err := cstp.ParseHeader(z.bytes())
			out := make([]byte, 1500)
			m, derr := compress.LZS.Decompress(out, z.payload())
			if err != nil || typ != cstp.Compressed || n != z.N || n >= len(tc.pkt) || derr != nil ||
				!bytes.Equal(out[:m], tc.pkt) {
				t.Fatalf("frame type %#x, %d bytes of %d (%v); decodes: %v", typ, n, len(tc.pkt), err, derr)
			}
		})
	}
	if raceEnabled {
		return // the race detector drops the codec's pooled tables at random
	}
	if a := testing.AllocsPerRun(200, func() {
		f := newFrame(cstp.Data, text[:1400])
		tun.compressFrame(tun.cstpCodec, f).release()
		f.release()
	}); a != 0 {
		t.Errorf("compressFrame: %v allocations per packet", a)
	}
}

// A COMPRESSED packet reaches the datapath decoded; a malformed one and one longer than the link MTU are dropped,
// counted and logged, and the next packet still goes through.
func TestReceiveCompressed(t *testing.T) {
	dp := newFakeDatapath()
	tun, logged := compressionTunnel(dp)
	pkt := ipv4Packet(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), strings.Repeat("abcd", 300))
	z := make([]byte, len(pkt))
	n, err := compress.LZ4.Compress(z, pkt)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{1}, 1501)
	zbig := make([]byte, 100)
	nbig, _ := compress.LZ4.Compress(zbig, big)

	tun.receiveCompressed(compress.LZ4, []byte{0xff, 0xff, 0xff}, 1, true)
	tun.receiveCompressed(compress.LZ4, zbig[:nbig], 1, true)
	tun.receiveCompressed(compress.LZ4, z[:n], 1, true)
	select {
	case got := <-dp.sent:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("datapath got %d bytes, want the %d-byte packet", len(got), len(pkt))
		}
	default:
		t.Fatal("the packet never reached the datapath")
	}
	if len(dp.sent) != 0 {
		t.Fatal("a bad packet reached the datapath")
	}
	in, _, bad := tun.sess.Compressed()
	if in != 1 || bad != 2 || len(*logged) != 2 || tun.sess.rxPackets.Load() != 1 {
		t.Fatalf("compressed in %d bad %d, logged %q, rx packets %d", in, bad, *logged, tun.sess.rxPackets.Load())
	}
	if a := testing.AllocsPerRun(200, func() {
		tun.receiveCompressed(compress.LZ4, z[:n], 1, true)
		<-dp.sent
	}); a > 1 { // the fake datapath's copy of the packet
		t.Errorf("receiveCompressed: %v allocations per packet", a)
	}
}
