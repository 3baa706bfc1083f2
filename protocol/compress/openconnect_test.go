package compress

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// LZS streams made by the stock openconnect 9.01 client (Debian's 9.01-3), one file per COMPRESSED packet it sent:
// see testdata/openconnect/README. Each must decode to an IPv4 packet whose length field, header checksum and
// TCP/UDP checksum agree with what we decoded: a wrong bit anywhere would break one of them.
func TestOpenconnectLZSStreams(t *testing.T) {
	files, _ := filepath.Glob("testdata/openconnect/*.lzs")
	if len(files) < 10 {
		t.Fatalf("%d captured streams, want the committed ones", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, 1500)
			n, err := LZS.Decompress(out, in)
			if err != nil {
				t.Fatalf("Decompress: %v", err)
			}
			if err := checkIPv4(out[:n]); err != "" {
				t.Fatalf("decoded %d bytes: %s", n, err)
			}
			roundTrip(t, LZS, out[:n])
			// Our encoder follows openconnect's: never noticeably worse.
			z := make([]byte, 2*n)
			if m, _ := LZS.Compress(z, out[:n]); m > len(in)+len(in)/50 {
				t.Errorf("we compress this packet to %d bytes, openconnect to %d", m, len(in))
			}
		})
	}
}

// checkIPv4 returns what is wrong with p as an IPv4 packet, "" if nothing.
func checkIPv4(p []byte) string {
	if len(p) < 20 || p[0]>>4 != 4 {
		return "not IPv4"
	}
	hl := int(p[0]&0xf) * 4
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) || hl < 20 || hl > len(p) {
		return "length fields disagree with the decoded length"
	}
	if checksum(0, p[:hl]) != 0xffff {
		return "bad header checksum"
	}
	proto := p[9]
	if proto != 6 && proto != 17 {
		return ""
	}
	// Pseudo-header: addresses, protocol, length.
	seg := p[hl:]
	sum := checksum(0, p[12:20])
	sum = checksum(sum, []byte{0, proto, byte(len(seg) >> 8), byte(len(seg))})
	if checksum(sum, seg) != 0xffff {
		return "bad transport checksum"
	}
	return ""
}

// checksum adds b to the ones'-complement sum s.
func checksum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}
