package dtls

// ClientHello parsing for the demultiplexer: is a datagram a ClientHello, which App-ID does it carry, which cipher
// suites does it offer. These run on every datagram from an unknown address, so they allocate nothing and trust
// no length field (FuzzHelloAppID).

import "encoding/binary"

// extAppID is the private ClientHello extension that openconnect 7.08–7.x used for the App-ID.
const extAppID = 48018

// isClientHello: record type handshake (22), epoch 0, handshake type ClientHello (1) at offset 13.
func isClientHello(b []byte) bool {
	return len(b) > 60 && b[0] == 22 && b[3] == 0 && b[4] == 0 && b[13] == 1
}

// helloAppID finds the App-ID of a ClientHello: the private extension 48018 if present (old clients), else the
// session_id. Offsets: 13 record header + 12 handshake header + 2 client_version + 32 random = 59, the
// session_id length.
func helloAppID(b []byte) (id AppID, ok bool) {
	if len(b) < 60 {
		return id, false
	}
	sidLen := int(b[59])
	p := 60 + sidLen
	if p > len(b) {
		return id, false
	}
	sid := b[60:p]
	if ext, found := findExtension(b, p); found {
		if len(ext) >= 1 && int(ext[0]) == len(ext)-1 && len(ext)-1 == AppIDLen {
			copy(id[:], ext[1:])
			return id, true
		}
	}
	if len(sid) != AppIDLen {
		return id, false
	}
	copy(id[:], sid)
	return id, true
}

// findExtension walks a ClientHello after the session_id (at p) to extension 48018.
func findExtension(b []byte, p int) ([]byte, bool) {
	if p >= len(b) {
		return nil, false
	}
	p += 1 + int(b[p]) // cookie
	if p+2 > len(b) {
		return nil, false
	}
	p += 2 + int(binary.BigEndian.Uint16(b[p:])) // cipher suites
	if p >= len(b) {
		return nil, false
	}
	p += 1 + int(b[p]) // compression methods
	if p+2 > len(b) {
		return nil, false
	}
	end := p + 2 + int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if end > len(b) {
		return nil, false
	}
	for p+4 <= end {
		typ, n := binary.BigEndian.Uint16(b[p:]), int(binary.BigEndian.Uint16(b[p+2:]))
		p += 4
		if p+n > end {
			return nil, false
		}
		if typ == extAppID {
			return b[p : p+n], true
		}
		p += n
	}
	return nil, false
}

// helloOffers reports whether a ClientHello lists cipher suite id.
func helloOffers(b []byte, id uint16) bool {
	if len(b) < 60 {
		return false
	}
	p := 60 + int(b[59]) // after the session_id
	if p >= len(b) {
		return false
	}
	p += 1 + int(b[p]) // cookie
	if p+2 > len(b) {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[p:]))
	p += 2
	if p+n > len(b) {
		return false
	}
	for i := p; i+2 <= p+n; i += 2 {
		if binary.BigEndian.Uint16(b[i:]) == id {
			return true
		}
	}
	return false
}
