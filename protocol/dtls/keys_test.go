package dtls

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
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

// allocsAndBytes runs f runs times and returns its allocations and bytes per run.
func allocsAndBytes(runs int, f func()) (allocs float64, bytes uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	allocs = testing.AllocsPerRun(runs, f)
	runtime.ReadMemStats(&after)
	return allocs, (after.TotalAlloc - before.TotalAlloc) / uint64(runs+1)
}

// What keying the fast path costs per session set-up: from the handshake's secrets (keys.go), against pion's
// gob-encoded state (dtlsrec.New), which it replaced.
func TestFastPathKeysAllocs(t *testing.T) {
	client, _, got, _ := fastPathClient(t, pion.TLS_PSK_WITH_AES_128_GCM_SHA256)
	defer established(t, got).Close() // before the client's clean-up: pion's EOF then goes unreported
	fromState, stateBytes := allocsAndBytes(50, func() {
		if _, err := dtlsrec.New(client); err != nil {
			t.Fatal(err)
		}
	})
	st, _ := client.ConnectionState()
	k := keyCapture{haveClient: true, haveServer: true}
	captured, capturedBytes := allocsAndBytes(50, func() {
		k.haveMaster = true
		if _, ok := k.layer(st.CipherSuiteID); !ok {
			t.Fatal("no layer from the captured secrets")
		}
	})
	t.Logf("keys from pion's state: %.0f allocations, %d bytes; from the handshake's secrets: %.0f, %d",
		fromState, stateBytes, captured, capturedBytes)
	if captured > fromState/4 {
		t.Errorf("keys from the handshake's secrets: %.0f allocations per session, want well under pion's state's %.0f",
			captured, fromState)
	}
}
