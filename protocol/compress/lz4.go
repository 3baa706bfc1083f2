package compress

// oc-lz4 (docs/protocol.md §8.4): each packet is one raw LZ4 block, with no frame header and no size prefix, as
// liblz4's LZ4_compress_default and LZ4_decompress_safe make and read it.

import (
	"sync"

	"github.com/pierrec/lz4/v4"
)

// LZ4 is the "oc-lz4" codec.
var LZ4 Codec = lz4Codec{}

type lz4Codec struct{}

var lz4Compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

func (lz4Codec) Name() string { return NameLZ4 }

func (lz4Codec) Compress(dst, src []byte) (int, error) {
	c := lz4Compressors.Get().(*lz4.Compressor)
	n, err := c.CompressBlock(src, dst)
	lz4Compressors.Put(c)
	// 0 means incompressible, an error that the result would not fit: both mean "send it as it is".
	if n == 0 || err != nil {
		return 0, ErrNoGain
	}
	return n, nil
}

func (lz4Codec) Decompress(dst, src []byte) (int, error) {
	if len(src) == 0 { // liblz4 refuses an empty block; the Go decoder would call it an empty packet
		return 0, ErrCorrupt
	}
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		// The decoder does not tell a malformed block from one that decodes to more than dst holds.
		return 0, ErrCorrupt
	}
	return n, nil
}
