// Package compress holds the stateless packet codecs of the OpenConnect protocol (docs/protocol.md §8): LZS and
// LZ4 in its "oc-lz4" framing. Each packet is compressed on its own, with no history carried from one packet to the
// next, so a lost DTLS record costs nothing but itself.
//
// The codecs write into buffers the caller provides and allocate nothing in steady state (their working tables
// come from pools). Decompression is the attack surface: a decoder never writes past its destination and reports
// a malformed stream as an error, so the caller drops that packet and nothing else.
package compress

import (
	"errors"
	"strings"
)

// Codec names on the wire (X-CSTP-Content-Encoding, X-DTLS-Content-Encoding). openconnect compares them
// case-sensitively, so they are sent exactly as written here.
const (
	NameLZS = "lzs"
	NameLZ4 = "oc-lz4"
)

var (
	// ErrNoGain is Compress's answer when the compressed form does not fit in dst.
	ErrNoGain = errors.New("compressed form does not fit")
	// ErrCorrupt is a stream that does not decode.
	ErrCorrupt = errors.New("malformed compressed data")
	// ErrTooLong is a stream that decodes to more than the destination holds.
	ErrTooLong = errors.New("decompressed data too long")
)

// A Codec compresses and decompresses single packets. Its methods are safe for concurrent use.
type Codec interface {
	// Name is the codec's name on the wire.
	Name() string
	// Compress writes src compressed into dst and returns its length, or ErrNoGain when that would not fit in
	// dst: a caller that passes dst[:len(src)-1] gets only results shorter than the packet.
	Compress(dst, src []byte) (int, error)
	// Decompress writes the packet src decodes to into dst and returns its length. It fails with ErrCorrupt when
	// src is malformed and with ErrTooLong when the packet would not fit in dst; dst may have been written to.
	Decompress(dst, src []byte) (int, error)
}

// ByName returns the codec of a wire name, compared case-insensitively (as ocserv does); nil if unknown.
func ByName(name string) Codec {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case NameLZS:
		return LZS
	case NameLZ4:
		return LZ4
	}
	return nil
}
