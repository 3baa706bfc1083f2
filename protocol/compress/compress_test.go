package compress

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

var codecs = []Codec{LZS, LZ4}

// openconnect's LZS encoder output for these inputs (docs/protocol.md §8.3); ours is the same greedy LZ77.
var lzsVectors = []struct{ in, out string }{
	{"A", "20e000"},
	{"AB", "2090b000"},
	{"AAAAAAAAAA", "20e07c7000"},
	{"abcabcabcabc", "30988c783f1c00"},
	{strings.Repeat("x", 40), "3c607ffc7000"},
}

func TestLZSVectors(t *testing.T) {
	for _, v := range lzsVectors {
		t.Run(v.in, func(t *testing.T) {
			want, _ := hex.DecodeString(v.out)
			dst := make([]byte, 64)
			n, err := LZS.Compress(dst, []byte(v.in))
			if err != nil || !bytes.Equal(dst[:n], want) {
				t.Errorf("Compress(%q) = %x, %v; want %x", v.in, dst[:n], err, want)
			}
			n, err = LZS.Decompress(dst, want)
			if err != nil || string(dst[:n]) != v.in {
				t.Errorf("Decompress(%x) = %q, %v; want %q", want, dst[:n], err, v.in)
			}
		})
	}
}

// samples are packets of the shapes a tunnel carries: text, repeats, noise, and mixes of them.
func samples() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	noise := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	twice := noise(700)
	text := []byte(strings.Repeat("GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", 30))
	long := make([]byte, 16000)
	for i := range long {
		long[i] = "abcdefgh"[r.IntN(8)]
	}
	return map[string][]byte{
		"empty":          {},
		"one byte":       {7},
		"two bytes":      {7, 7},
		"zeros 1400":     make([]byte, 1400),
		"text 1400":      text[:1400],
		"noise 1400":     noise(1400),
		"noise twice":    append(twice, twice...),
		"far repeat":     append(append(noise(1500), noise(600)...), text[:600]...),
		"small alphabet": long,
		"period 3":       []byte(strings.Repeat("abc", 500)),
		"long run 600":   append(bytes.Repeat([]byte{1}, 600), 2, 3, 4),
	}
}

// Every codec gives back what it was given, for every shape, and refuses to expand: with dst one byte short of
// the input it either fits or says ErrNoGain.
func TestRoundTrip(t *testing.T) {
	for _, c := range codecs {
		for name, in := range samples() {
			t.Run(c.Name()+"/"+name, func(t *testing.T) {
				roundTrip(t, c, in)
			})
		}
	}
}

func roundTrip(t *testing.T, c Codec, in []byte) {
	t.Helper()
	z := make([]byte, 2*len(in)+64)
	n, err := c.Compress(z, in)
	if err != nil {
		if len(in) > 0 && c == LZS {
			t.Fatalf("Compress(%d bytes) with room: %v", len(in), err)
		}
		return // LZ4 declares tiny or incompressible input as such
	}
	out := make([]byte, len(in)+1)
	m, err := c.Decompress(out, z[:n])
	if err != nil || !bytes.Equal(out[:m], in) {
		t.Fatalf("round trip of %d bytes via %d: %v, equal %v", len(in), n, err, bytes.Equal(out[:m], in))
	}
	if len(in) > 0 {
		if m, err := c.Decompress(out[:len(in)-1], z[:n]); err == nil {
			t.Fatalf("Decompress into %d bytes of a %d-byte packet returned %d, no error", len(in)-1, len(in), m)
		}
	}
	short := z[:max(len(in)-1, 0)]
	if n, err := c.Compress(short, in); err != nil {
		if !errors.Is(err, ErrNoGain) {
			t.Fatalf("Compress into %d bytes: %v, want ErrNoGain", len(short), err)
		}
	} else if m, err := c.Decompress(out, short[:n]); err != nil || !bytes.Equal(out[:m], in) {
		t.Fatalf("round trip with a short dst: %v", err)
	}
}

// Random packets of random sizes and compressibility, against the same encoder state across packets (the pool
// hands the same tables back): no packet may see another's history.
func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			for range 2000 {
				n := r.IntN(3000)
				alphabet := 1 + r.IntN(256)
				in := make([]byte, n)
				for i := range in {
					in[i] = byte(r.IntN(alphabet))
				}
				roundTrip(t, c, in)
			}
		})
	}
}

// The LZS encoder's position base wraps without mixing packets.
func TestLZSBaseWrap(t *testing.T) {
	e := &lzsEncoder{base: 1<<30 - 3000}
	in := []byte(strings.Repeat("wrap around ", 200))
	dst := make([]byte, 4096)
	out := make([]byte, 4096)
	for range 4 {
		n, ok := e.compress(dst, in)
		if !ok {
			t.Fatal("compress failed")
		}
		if m, err := LZS.Decompress(out, dst[:n]); err != nil || !bytes.Equal(out[:m], in) {
			t.Fatalf("round trip at base %d: %v", e.base, err)
		}
	}
}

// bitStream builds an LZS stream from (value, bits) pairs, zero-padded to the byte.
func bitStream(codes ...uint32) []byte {
	w := bitWriter{dst: make([]byte, 64), ok: true}
	for i := 0; i < len(codes); i += 2 {
		w.put(codes[i], uint(codes[i+1]))
	}
	w.put(0, 7)
	return w.dst[:w.n]
}

func TestLZSMalformed(t *testing.T) {
	const lit, end = 0x41, lzsEndMarker
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"no end marker", bitStream(lit, 9)[:1]},
		{"truncated literal", bitStream(lit, 9, lit, 9)[:2]},
		{"offset beyond output", bitStream(lit, 9, 0x180|2, 9, 0, 2, end, 9)},
		{"offset zero, long form", bitStream(lit, 9, 0x1000, 13, 0, 2, end, 9)},
		{"truncated length", bitStream(lit, 9, 0x180|1, 9, 0xf, 4, 0xf, 4)},
		{"truncated long offset", bitStream(lit, 9, 0x100, 9)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]byte, 100)
			if n, err := LZS.Decompress(dst, tc.in); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Decompress(%x) = %d bytes, %v; want ErrCorrupt", tc.in, n, err)
			}
		})
	}
	// The stream builder is right: the same codes with a valid offset decode.
	if n, err := LZS.Decompress(make([]byte, 10), bitStream(lit, 9, 0x180|1, 9, 1, 2, end, 9)); n != 4 || err != nil {
		t.Fatalf("valid stream: %d, %v", n, err)
	}
	// A copy that would run past the destination.
	dst := make([]byte, 5)
	want, _ := hex.DecodeString("20e07c7000") // 10 × A
	if _, err := LZS.Decompress(dst, want); !errors.Is(err, ErrTooLong) {
		t.Errorf("10 bytes into 5: %v, want ErrTooLong", err)
	}
}

// Compress and Decompress allocate nothing per packet.
func TestAllocs(t *testing.T) {
	in := samples()["text 1400"]
	z := make([]byte, len(in))
	out := make([]byte, 1500)
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			n, _ := c.Compress(z, in)
			if raceEnabled {
				t.Skip("allocation counts of pooled tables are not meaningful under the race detector")
			}
			if a := testing.AllocsPerRun(200, func() { c.Compress(z[:len(in)-1], in) }); a != 0 {
				t.Errorf("Compress: %v allocations per packet", a)
			}
			if a := testing.AllocsPerRun(200, func() { c.Decompress(out, z[:n]) }); a != 0 {
				t.Errorf("Decompress: %v allocations per packet", a)
			}
		})
	}
}

func TestByName(t *testing.T) {
	for name, want := range map[string]Codec{"lzs": LZS, "LZS": LZS, "oc-lz4": LZ4, " OC-LZ4": LZ4, "lz4": nil, "deflate": nil} {
		if got := ByName(name); got != want {
			t.Errorf("ByName(%q) = %v, want %v", name, got, want)
		}
	}
}

func BenchmarkCodecs(b *testing.B) {
	for _, c := range codecs {
		for _, name := range []string{"text 1400", "noise 1400", "zeros 1400"} {
			in := samples()[name]
			z := make([]byte, len(in)-1)
			out := make([]byte, 1500)
			b.Run(fmt.Sprintf("%s/compress/%s", c.Name(), name), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(in)))
				for b.Loop() {
					c.Compress(z, in)
				}
			})
			n, err := c.Compress(z, in)
			if err != nil {
				continue // incompressible: nothing to decompress
			}
			b.Run(fmt.Sprintf("%s/decompress/%s", c.Name(), name), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(in)))
				for b.Loop() {
					c.Decompress(out, z[:n])
				}
			})
		}
	}
}
