package dtls

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	pion "github.com/pion/dtls/v3"
)

// hello returns a handshake record of type typ with random r, as a datagram.
func hello(typ byte, r []byte) []byte {
	b := make([]byte, helloRandomAt+randomLen+8)
	b[0], b[13] = 22, typ
	copy(b[helloRandomAt:], r)
	return b
}

// The fast path is keyed from the captured secrets only when all of them are there and the key log names the
// ClientHello's random; otherwise the handshake falls back to pion's state.
func TestKeyCapture(t *testing.T) {
	cr, sr := bytes.Repeat([]byte{1}, randomLen), bytes.Repeat([]byte{2}, randomLen)
	ms := bytes.Repeat([]byte{3}, masterSecretLen)
	logLine := func(r []byte) []byte { return fmt.Appendf(nil, "CLIENT_RANDOM %x %x\n", r, ms) }
	fragment := hello(1, cr)
	fragment[21] = 1 // a fragment offset: not the start of the hello
	for _, tc := range []struct {
		name     string
		in, out  []byte
		log      []byte
		wantKeys bool
	}{
		{"complete", hello(1, cr), hello(2, sr), logLine(cr), true},
		{"no key log", hello(1, cr), hello(2, sr), nil, false},
		{"another client random", hello(1, cr), hello(2, sr), logLine(sr), false},
		{"no ServerHello", hello(1, cr), hello(11, sr), logLine(cr), false},
		{"a fragment", fragment, hello(2, sr), logLine(cr), false},
		{"a bad key log", hello(1, cr), hello(2, sr), []byte("CLIENT_RANDOM " + hex.EncodeToString(cr) + " zz\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k keyCapture
			k.sawIncoming(tc.in)
			k.sawOutgoing(tc.out)
			if tc.log != nil {
				k.Write(tc.log)
			}
			_, ok := k.layer(pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
			if ok != tc.wantKeys {
				t.Fatalf("keys from the capture: %v, want %v", ok, tc.wantKeys)
			}
			if k.master != [masterSecretLen]byte{} {
				t.Error("the master secret was not wiped")
			}
		})
	}
}
