package dtls

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// clientHello builds a DTLS ClientHello datagram as openconnect sends it: session_id = App-ID, and optionally the
// private extension 48018 that 7.x clients used instead.
func clientHello(sid []byte, extID []byte) []byte {
	var body []byte
	body = append(body, 0xfe, 0xfd)                     // client_version DTLS 1.2
	body = append(body, bytes.Repeat([]byte{7}, 32)...) // random
	body = append(body, byte(len(sid)))
	body = append(body, sid...)
	body = append(body, 0)                            // cookie
	body = append(body, 0, 4, 0x00, 0xa9, 0xcc, 0xab) // cipher suites
	body = append(body, 1, 0)                         // compression: null
	var ext []byte
	ext = binary.BigEndian.AppendUint16(ext, 65281)
	ext = binary.BigEndian.AppendUint16(ext, 1)
	ext = append(ext, 0)
	if extID != nil {
		ext = binary.BigEndian.AppendUint16(ext, extAppID)
		ext = binary.BigEndian.AppendUint16(ext, uint16(1+len(extID)))
		ext = append(ext, byte(len(extID)))
		ext = append(ext, extID...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	hs := []byte{1, 0, byte(len(body) >> 8), byte(len(body)), 0, 0, 0, 0, 0, 0, byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	rec := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

func TestHelloAppID(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, 32)
	other := bytes.Repeat([]byte{0xcd}, 32)
	tests := []struct {
		name string
		pkt  []byte
		want []byte
	}{
		{"session id", clientHello(id, nil), id},
		{"extension 48018 wins", clientHello(other, id), id},
		{"short session id", clientHello(id[:16], nil), nil},
		{"no session id", clientHello(nil, nil), nil},
		{"truncated extensions", clientHello(id, nil)[:95], id},
		{"truncated session id", clientHello(id, nil)[:70], nil},
		{"too short", clientHello(id, nil)[:40], nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !isClientHello(tc.pkt) && tc.want != nil {
				t.Fatal("not recognised as a ClientHello")
			}
			got, ok := helloAppID(tc.pkt)
			if ok != (tc.want != nil) || ok && !bytes.Equal(got[:], tc.want) {
				t.Errorf("helloAppID = %x, %v; want %x", got, ok, tc.want)
			}
		})
	}
}

func TestHelloOffers(t *testing.T) {
	hello := clientHello(bytes.Repeat([]byte{1}, 32), nil) // offers 0x00a9 and 0xccab
	for _, tc := range []struct {
		name  string
		suite uint16
		want  bool
	}{
		{"first suite", 0x00a9, true},
		{"last suite", 0xccab, true},
		{"not offered", uint16(0xc0a8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := helloOffers(hello, tc.suite); got != tc.want {
				t.Errorf("helloOffers(%#04x) = %v, want %v", tc.suite, got, tc.want)
			}
		})
	}
	if helloOffers(hello[:64], 0x00a9) {
		t.Error("a truncated ClientHello offers suites")
	}
}

// FuzzHelloAppID runs the parsers of every datagram from an unknown address on arbitrary input. Seeds: the
// builder's hellos here, and testdata/fuzz/FuzzHelloAppID (a ClientHello of the Go client, edge cases of the
// length fields).
func FuzzHelloAppID(f *testing.F) {
	f.Add(clientHello(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)))
	f.Add(clientHello(bytes.Repeat([]byte{1}, 32), nil))
	f.Add(clientHello(nil, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isClientHello(b) {
			return
		}
		id, ok := helloAppID(b)
		if ok && !bytes.Contains(b, id[:]) {
			t.Fatalf("App-ID %x is not in the datagram", id)
		}
		helloOffers(b, 0x00a9)
	})
}
