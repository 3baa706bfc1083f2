package compress

import (
	"bytes"
	"testing"
)

// The decoders take anything a client sends: they must never panic or write past dst, and what they accept must
// survive a round trip through our encoder. Seeds: testdata/fuzz (valid streams, including ones the stock
// openconnect client produced) and the cases below.
func fuzzDecoder(f *testing.F, c Codec) {
	for _, in := range samples() {
		z := make([]byte, len(in)+64)
		if n, err := c.Compress(z, in); err == nil {
			f.Add(z[:n])
		}
		f.Add(in) // mostly not a valid stream
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		var guard [1600]byte
		dst := guard[:1500]
		n, err := c.Decompress(dst, stream)
		if !bytes.Equal(guard[1500:], make([]byte, 100)) {
			t.Fatalf("Decompress wrote past dst")
		}
		if err != nil {
			return
		}
		if n > len(dst) {
			t.Fatalf("Decompress returned %d > %d", n, len(dst))
		}
		roundTrip(t, c, dst[:n])
	})
}

func FuzzLZSDecompress(f *testing.F) { fuzzDecoder(f, LZS) }
func FuzzLZ4Decompress(f *testing.F) { fuzzDecoder(f, LZ4) }

// FuzzRoundTrip: any packet comes back from both codecs as it went in.
func FuzzRoundTrip(f *testing.F) {
	for _, in := range samples() {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, c := range codecs {
			roundTrip(t, c, in)
		}
	})
}
