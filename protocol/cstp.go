package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// CSTP framing (protocol.md §6): every packet on the TLS stream after CONNECT is an 8-byte header
//
//	'S' 'T' 'F' 0x01 | payload length (big endian, 2 bytes) | type | 0x00
//
// followed by the payload. openconnect reads exactly one frame per TLS record, so a frame must be written with one
// Write on the tls.Conn and never coalesced with another (see tunnel.go).

const (
	cstpHeaderLen = 8
	// maxCSTPPayload bounds what we accept from a client: the largest IP packet we negotiate is far below it, and
	// the TLS record limit (16 KiB) bounds what the client can send in one record anyway.
	maxCSTPPayload = 16384
)

// CSTP packet types. DTLS records use the same values in their single type byte.
const (
	pktData       byte = 0x00
	pktDPDReq     byte = 0x03
	pktDPDResp    byte = 0x04
	pktDisconnect byte = 0x05
	pktKeepalive  byte = 0x07
	pktCompressed byte = 0x08
	pktTerminate  byte = 0x09
)

// disconnectUser is the reason byte of a client's DISCONNECT when the user logs out (openconnect always sends it).
const disconnectUser byte = 0xb0

var (
	errBadMagic     = errors.New("bad CSTP frame header")
	errFrameTooLong = errors.New("CSTP frame too long")
)

// putCSTPHeader writes a frame header for a payload of n bytes into b[:8].
func putCSTPHeader(b []byte, typ byte, n int) {
	b[0], b[1], b[2], b[3] = 'S', 'T', 'F', 0x01
	binary.BigEndian.PutUint16(b[4:6], uint16(n))
	b[6] = typ
	b[7] = 0
}

// parseCSTPHeader validates a frame header and returns its type and payload length.
func parseCSTPHeader(h []byte) (typ byte, n int, err error) {
	if h[0] != 'S' || h[1] != 'T' || h[2] != 'F' || h[3] != 0x01 || h[7] != 0 {
		return 0, 0, fmt.Errorf("%w: % x", errBadMagic, h[:cstpHeaderLen])
	}
	n = int(binary.BigEndian.Uint16(h[4:6]))
	if n > maxCSTPPayload {
		return 0, 0, fmt.Errorf("%w: %d bytes", errFrameTooLong, n)
	}
	return h[6], n, nil
}

// readCSTPFrame reads one frame from r into buf (which must hold cstpHeaderLen+maxCSTPPayload bytes) and returns
// its type and payload, a sub-slice of buf. It reads the stream as bytes, so any record layout is accepted.
func readCSTPFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	return readCSTPFrameInto(r, &buf)
}

// readCSTPFrameInto is readCSTPFrame into *bufp, which it grows (once, for good) when a frame does not fit: a
// tunnel starts with a buffer for MTU-sized frames rather than the 16 KiB the protocol allows.
func readCSTPFrameInto(r io.Reader, bufp *[]byte) (typ byte, payload []byte, err error) {
	buf := *bufp
	if _, err := io.ReadFull(r, buf[:cstpHeaderLen]); err != nil {
		return 0, nil, err
	}
	typ, n, err := parseCSTPHeader(buf[:cstpHeaderLen])
	if err != nil {
		return 0, nil, err
	}
	if cstpHeaderLen+n > len(buf) {
		grown := make([]byte, cstpHeaderLen+maxCSTPPayload)
		copy(grown, buf[:cstpHeaderLen])
		buf, *bufp = grown, grown
	}
	payload = buf[cstpHeaderLen : cstpHeaderLen+n]
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("truncated CSTP frame (%d-byte payload): %w", n, err)
	}
	return typ, payload, nil
}
