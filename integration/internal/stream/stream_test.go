package stream

import (
	"bytes"
	"testing"
)

// WriteText is deterministic, exactly n bytes long whatever the chunking, and compressible; Write is neither of
// the last.
func TestWriteText(t *testing.T) {
	var a, b bytes.Buffer
	WriteText(&a, 200000, 7)
	WriteText(&b, 100000, 7)
	if a.Len() != 200000 || b.Len() != 100000 || !bytes.HasPrefix(a.Bytes(), b.Bytes()) {
		t.Fatalf("lengths %d, %d; prefix %v", a.Len(), b.Len(), bytes.HasPrefix(a.Bytes(), b.Bytes()))
	}
	var c bytes.Buffer
	WriteText(&c, 200000, 8)
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("seeds 7 and 8 give the same text")
	}
}
