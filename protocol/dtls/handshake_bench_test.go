package dtls

import (
	"runtime"
	"testing"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
)

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
