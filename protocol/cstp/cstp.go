// Package cstp is the CSTP framing of the OpenConnect protocol (docs/protocol.md §6), shared by the server
// (package protocol) and the Go client (protocol/client). Every packet on the TLS stream after CONNECT is an
// 8-byte header
//
//	'S' 'T' 'F' 0x01 | payload length (big endian, 2 bytes) | type | 0x00
//
// followed by the payload. openconnect reads exactly one frame per TLS record, so a frame must be written with one
// Write on the tls.Conn and never coalesced with another. DTLS records carry the same packet types in their single
// type byte: a record is a frame from byte 7 on (byte 7 of a header is 0, which is also the DATA type).
package cstp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	// HeaderLen is the length of a frame header.
	HeaderLen = 8
	// MaxPayload bounds what a peer accepts in one frame: the largest IP packet negotiated is far below it, and the
	// TLS record limit (16 KiB) bounds what can be sent in one record anyway.
	MaxPayload = 16384
)

// Packet types (docs/protocol.md §6.1). DTLS records use the same values in their single type byte.
const (
	Data       byte = 0x00
	DPDReq     byte = 0x03
	DPDResp    byte = 0x04
	Disconnect byte = 0x05
	Keepalive  byte = 0x07
	Compressed byte = 0x08
	Terminate  byte = 0x09
)

// DisconnectUser is the reason byte of a client's DISCONNECT when the user logs out (openconnect always sends it).
const DisconnectUser byte = 0xb0

var (
	// ErrBadMagic is a frame header that is not 'S' 'T' 'F' 0x01 … 0x00.
	ErrBadMagic = errors.New("bad CSTP frame header")
	// ErrFrameTooLong is a frame header announcing more than MaxPayload bytes.
	ErrFrameTooLong = errors.New("CSTP frame too long")
)

// PutHeader writes a frame header for a payload of n bytes into b[:HeaderLen].
func PutHeader(b []byte, typ byte, n int) {
	b[0], b[1], b[2], b[3] = 'S', 'T', 'F', 0x01
	binary.BigEndian.PutUint16(b[4:6], uint16(n))
	b[6] = typ
	b[7] = 0
}

// ParseHeader validates a frame header and returns its type and payload length.
func ParseHeader(h []byte) (typ byte, n int, err error) {
	if h[0] != 'S' || h[1] != 'T' || h[2] != 'F' || h[3] != 0x01 || h[7] != 0 {
		return 0, 0, fmt.Errorf("%w: % x", ErrBadMagic, h[:HeaderLen])
	}
	n = int(binary.BigEndian.Uint16(h[4:6]))
	if n > MaxPayload {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrFrameTooLong, n)
	}
	return h[6], n, nil
}

// ReadFrame reads one frame from r into *bufp and returns its type and payload, a sub-slice of *bufp valid until
// the next call. It reads the stream as bytes, so any record layout is accepted. *bufp must hold at least
// HeaderLen bytes; it is grown (once, for good) when a frame does not fit: a reader can start with a buffer for
// MTU-sized frames rather than the 16 KiB the protocol allows.
func ReadFrame(r io.Reader, bufp *[]byte) (typ byte, payload []byte, err error) {
	buf := *bufp
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		return 0, nil, err
	}
	typ, n, err := ParseHeader(buf[:HeaderLen])
	if err != nil {
		return 0, nil, err
	}
	if HeaderLen+n > len(buf) {
		grown := make([]byte, HeaderLen+MaxPayload)
		copy(grown, buf[:HeaderLen])
		buf, *bufp = grown, grown
	}
	payload = buf[HeaderLen : HeaderLen+n]
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("truncated CSTP frame (%d-byte payload): %w", n, err)
	}
	return typ, payload, nil
}

// AppendFrame appends a frame of type typ carrying payload to dst.
func AppendFrame(dst []byte, typ byte, payload []byte) []byte {
	var h [HeaderLen]byte
	PutHeader(h[:], typ, len(payload))
	return append(append(dst, h[:]...), payload...)
}
