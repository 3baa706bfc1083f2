package compress

// LZS (docs/protocol.md §8.3): an LZ77 bit stream, most significant bit first, of
//
//	0 bbbbbbbb                literal byte
//	1 1 ooooooo  + length     copy from offset 1..127 back
//	1 0 ooooooooooo + length  copy from offset 1..2047 back (offset 0 is invalid)
//	1 1 0000000               end marker; zero bits pad to the byte
//
// and a length code after each offset: 00, 01, 10 = 2, 3, 4; 1100, 1101, 1110 = 5, 6, 7; 1111 then nibbles, each
// 1111 adding 15 and the first other one adding its value to 8.
//
// The encoder is a greedy LZ77 like openconnect's: at each position the longest match within the window, found
// through a hash chain of earlier positions with the same first two bytes; a tie goes to the nearest. Unlike
// openconnect it walks at most lzsMaxChain candidates per position, so that no packet costs more than a bounded
// amount of work, and it never clears its tables: positions are stored offset by a base that moves past each
// packet, so entries of earlier packets read as out of the window.

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

const (
	lzsWindow    = 2048 // offsets are 11 bits: 1..2047
	lzsHashBits  = 12
	lzsMaxChain  = 64
	lzsEndMarker = 0x180 // 1 1 0000000
)

// LZS is the "lzs" codec.
var LZS Codec = lzsCodec{}

type lzsCodec struct{}

func (lzsCodec) Name() string { return NameLZS }

// lzsEncoder holds the match-finding tables. Positions are stored as base+i; an entry below base belongs to an
// earlier packet.
type lzsEncoder struct {
	head [1 << lzsHashBits]int32 // per hash of two bytes: the latest position
	prev [lzsWindow]int32        // per position (mod the window): the previous position with the same hash
	base int32
}

var lzsEncoders = sync.Pool{New: func() any { return &lzsEncoder{base: 1} }}

func lzsHash(b []byte, i int) uint32 {
	return (uint32(b[i])<<8 | uint32(b[i+1])) * 0x9e3779b1 >> (32 - lzsHashBits)
}

// bitWriter packs codes most significant bit first into dst; ok turns false when dst is full.
type bitWriter struct {
	dst   []byte
	n     int
	acc   uint64
	nbits uint
	ok    bool
}

func (w *bitWriter) put(v uint32, n uint) {
	w.acc = w.acc<<n | uint64(v)
	w.nbits += n
	for w.nbits >= 8 {
		w.nbits -= 8
		if w.n == len(w.dst) {
			w.ok = false
			w.nbits = 0
			return
		}
		w.dst[w.n] = byte(w.acc >> w.nbits)
		w.n++
	}
}

func (w *bitWriter) copyCode(offset, length int) {
	if offset < 128 {
		w.put(0x180|uint32(offset), 9)
	} else {
		w.put(0x1000|uint32(offset), 13)
	}
	switch {
	case length < 5:
		w.put(uint32(length-2), 2)
	case length < 8:
		w.put(uint32(length+7), 4) // 1100 + (length-5)
	default:
		w.put(0xf, 4)
		r := length - 8
		for ; r >= 15; r -= 15 {
			w.put(0xf, 4)
		}
		w.put(uint32(r), 4)
	}
}

// matchLen is the length of the common prefix of a and b (len(a) >= len(b)).
func matchLen(a, b []byte) int {
	n := 0
	for len(b)-n >= 8 {
		if x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:]); x != 0 {
			return n + bits.TrailingZeros64(x)/8
		}
		n += 8
	}
	for n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func (lzsCodec) Compress(dst, src []byte) (int, error) {
	e := lzsEncoders.Get().(*lzsEncoder)
	n, ok := e.compress(dst, src)
	lzsEncoders.Put(e)
	if !ok {
		return 0, ErrNoGain
	}
	return n, nil
}

func (e *lzsEncoder) compress(dst, src []byte) (int, bool) {
	if len(src) >= 1<<30 {
		return 0, false
	}
	if e.base > 1<<30-int32(len(src)) { // before the positions overflow: start afresh
		e.head = [len(e.head)]int32{}
		e.base = 1
	}
	base := e.base
	e.base += int32(len(src)) + 1
	insert := func(i int) {
		h := lzsHash(src, i)
		e.prev[(base+int32(i))&(lzsWindow-1)] = e.head[h]
		e.head[h] = base + int32(i)
	}
	w := bitWriter{dst: dst, ok: true}
	i := 0
	for i+1 < len(src) && w.ok {
		h := lzsHash(src, i)
		cand := e.head[h]
		pos := base + int32(i)
		e.prev[pos&(lzsWindow-1)] = cand
		e.head[h] = pos
		best, bestOff := 1, 0
		rest := src[i:]
		for chain := 0; chain < lzsMaxChain && cand >= base && pos-cand < lzsWindow; chain++ {
			c := int(cand - base)
			if src[c+best] == rest[best] { // can this candidate beat the best so far?
				if l := matchLen(src[c:], rest); l > best {
					best, bestOff = l, i-c
					if l == len(rest) {
						break
					}
				}
			}
			cand = e.prev[cand&(lzsWindow-1)]
		}
		if best < 2 {
			w.put(uint32(src[i]), 9)
			i++
			continue
		}
		w.copyCode(bestOff, best)
		for j := i + 1; j < i+best && j+1 < len(src); j++ {
			insert(j)
		}
		i += best
	}
	if i < len(src) {
		w.put(uint32(src[i]), 9)
	}
	// The end marker and 7 zero bits, of which only whole bytes are written: the marker, padded to the byte.
	w.put(lzsEndMarker<<7, 16)
	return w.n, w.ok
}

func (lzsCodec) Decompress(dst, src []byte) (int, error) {
	var (
		in    int    // next byte of src to load
		acc   uint64 // bits loaded, the next ones in the low nbits
		nbits uint
		out   int
	)
	// get returns the next n (<= 13) bits; ok is false when src ends first.
	get := func(n uint) (uint32, bool) {
		for nbits < n {
			if in == len(src) {
				return 0, false
			}
			acc = acc<<8 | uint64(src[in])
			in++
			nbits += 8
		}
		nbits -= n
		return uint32(acc>>nbits) & (1<<n - 1), true
	}
	for {
		code, ok := get(9)
		if !ok {
			return 0, ErrCorrupt
		}
		if code < 0x100 {
			if out == len(dst) {
				return 0, ErrTooLong
			}
			dst[out] = byte(code)
			out++
			continue
		}
		if code == lzsEndMarker {
			return out, nil
		}
		offset := int(code & 0x7f)
		if code < 0x180 { // 10 + 11-bit offset: 7 bits read, 4 to go
			lo, ok := get(4)
			if !ok {
				return 0, ErrCorrupt
			}
			offset = offset<<4 | int(lo)
		}
		length, ok := lzsLength(get)
		if !ok {
			return 0, ErrCorrupt
		}
		if offset == 0 || offset > out {
			return 0, ErrCorrupt
		}
		if length > len(dst)-out {
			return 0, ErrTooLong
		}
		// The copy runs byte by byte in LZS, so an offset below the length repeats the last offset bytes: copying
		// from what is already there, in chunks that double, is the same.
		for k := 0; k < length; {
			k += copy(dst[out+k:out+length], dst[out-offset:out+k])
		}
		out += length
	}
}

// lzsLength reads a length code. A long one is bounded by the input: each nibble of 1111 adds 15.
func lzsLength(get func(uint) (uint32, bool)) (int, bool) {
	v, ok := get(2)
	if !ok {
		return 0, false
	}
	if v != 3 {
		return int(v) + 2, true
	}
	if v, ok = get(2); !ok {
		return 0, false
	}
	if v != 3 {
		return int(v) + 5, true
	}
	length := 8
	for {
		if v, ok = get(4); !ok {
			return 0, false
		}
		length += int(v)
		if v != 15 {
			return length, true
		}
		if length > 1<<20 { // far beyond any destination; the caller reports it as too long
			return length, true
		}
	}
}
