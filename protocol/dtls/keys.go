package dtls

// The fast path's record keys, from what the association sees of its handshake instead of pion's exported state. pion
// exports its state gob-encoded, and decoding it cost ~20 KB and ~290 allocations per session set-up, an eighth of what
// the network process allocated per login (docs/performance.md, Memory). The keys need the suite, the master secret and
// the two hello randoms: the randoms cross the association in the clear (the client's ClientHello, which pion reads
// through ReadFrom, and our ServerHello, which it writes through WriteTo), and pion hands the master secret to a key
// log writer (NSS key log format: "CLIENT_RANDOM <client random> <master secret>"), which here is the association's
// memory, wiped once the keys are derived (pion's warning that a key log compromises security is about writing the
// secrets out; this copy stays in the process, whose pion state holds the same secret until pion is retired, and whose
// fast path holds the keys derived from it). The key log's client random must match the ClientHello's; anything missing
// or inconsistent falls back to pion's state (dtlsrec.New). PSK mode only: in legacy mode (a resumed session) pion logs
// its own random in that place.

import (
	"bytes"
	"encoding/hex"
	"sync"

	pion "github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
)

const (
	randomLen       = 32
	masterSecretLen = 48
	// helloRandomAt: 13 record header + 12 handshake header + 2 version (ClientHello and ServerHello alike).
	helloRandomAt = 13 + 12 + 2
	keyLogLabel   = "CLIENT_RANDOM"
)

// keyCapture collects an association's handshake secrets. pion writes to it from its handshake goroutine, the
// association's ReadFrom and WriteTo run in pion's goroutines too; the handshake reads it once pion is done.
type keyCapture struct {
	mu                         sync.Mutex
	clientRandom, serverRandom [randomLen]byte
	haveClient, haveServer     bool
	logRandom                  [randomLen]byte
	master                     [masterSecretLen]byte
	haveMaster                 bool
}

// helloRandom returns the random of a ClientHello (typ 1) or ServerHello (typ 2) that starts datagram b, unfragmented
// and in epoch 0.
func helloRandom(b []byte, typ byte) ([]byte, bool) {
	if len(b) < helloRandomAt+randomLen || b[0] != 22 || b[3] != 0 || b[4] != 0 || b[13] != typ ||
		b[19] != 0 || b[20] != 0 || b[21] != 0 { // fragment offset
		return nil, false
	}
	return b[helloRandomAt : helloRandomAt+randomLen], true
}

// sawIncoming notes the ClientHello's random (the first one: a retransmission repeats it).
func (k *keyCapture) sawIncoming(b []byte) { k.saw(b, 1, &k.clientRandom, &k.haveClient) }

// sawOutgoing notes our ServerHello's random.
func (k *keyCapture) sawOutgoing(b []byte) { k.saw(b, 2, &k.serverRandom, &k.haveServer) }

// saw keeps the random of the first hello of type typ in dst.
func (k *keyCapture) saw(b []byte, typ byte, dst *[randomLen]byte, have *bool) {
	if r, ok := helloRandom(b, typ); ok {
		k.mu.Lock()
		if !*have {
			copy(dst[:], r)
			*have = true
		}
		k.mu.Unlock()
	}
}

// Write takes pion's key log line.
func (k *keyCapture) Write(p []byte) (int, error) {
	line := bytes.TrimSuffix(p, []byte("\n"))
	f := bytes.Fields(line)
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(f) == 3 && string(f[0]) == keyLogLabel && hex.DecodedLen(len(f[1])) == randomLen &&
		hex.DecodedLen(len(f[2])) == masterSecretLen && !k.haveMaster {
		_, err1 := hex.Decode(k.logRandom[:], f[1])
		_, err2 := hex.Decode(k.master[:], f[2])
		k.haveMaster = err1 == nil && err2 == nil
	}
	return len(p), nil
}

// layer derives the record layer for suite from the captured secrets, and wipes them; false when they are
// incomplete or inconsistent.
func (k *keyCapture) layer(suite pion.CipherSuiteID) (*dtlsrec.Layer, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	defer clear(k.master[:])
	if !k.haveClient || !k.haveServer || !k.haveMaster || k.logRandom != k.clientRandom {
		return nil, false
	}
	// Epoch 1 both ways: the first (and, with pion, only) handshake of the association.
	l, err := dtlsrec.FromSecrets(dtlsrec.Secrets{Suite: suite, MasterSecret: k.master[:], ClientRandom: k.clientRandom,
		ServerRandom: k.serverRandom, LocalEpoch: 1, RemoteEpoch: 1})
	return l, err == nil
}
