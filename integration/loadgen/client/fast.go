package client

// The client's own DTLS record layer for application data (the same scheme as ocgate's server fast path,
// protocol/dtls_fast.go): after pion's handshake, derive the record keys from pion's exported state (master
// secret and randoms, TLS 1.2 PRF) and seal/open records with one AEAD call. Suites: AES-GCM (RFC 5288, explicit
// nonce) and ChaCha20-Poly1305 (RFC 7905). RFC 6347 §4.1.2.6 replay window included.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"hash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3"
	"golang.org/x/crypto/chacha20poly1305"
)

const (
	dtlsRecordHeaderLen = 13
	recordAppData       = 23
	// fastSeqStart keeps our sequence numbers clear of the few pion uses (Finished, retransmissions, the final
	// close_notify), so that no nonce is ever used twice.
	fastSeqStart = 1 << 20
)

// pionState mirrors the fields of pion's serialized State that we need (gob matches by name).
type pionState struct {
	LocalEpoch    uint16
	RemoteEpoch   uint16
	LocalRandom   [32]byte
	RemoteRandom  [32]byte
	CipherSuiteID uint16
	MasterSecret  []byte
	IsClient      bool
}

type dtlsFast struct {
	pc          *net.UDPConn
	peer        netip.AddrPort
	epoch       uint16 // ours
	remoteEpoch uint16

	sendAEAD, recvAEAD cipher.AEAD
	sendIV, recvIV     []byte
	explicitNonce      bool // AES-GCM: 8-byte nonce in the record; ChaCha20: none
	sendSeq            atomic.Uint64

	// owned by the single reader (udpReader)
	maxSeq  uint64
	window  uint64
	seen    bool
	rxAAD   [13]byte
	rxNonce [12]byte
	rxBad   atomic.Uint64
}

var errFastUnsupported = errors.New("suite not on the fast path")

func newDTLSFast(conn *dtls.Conn, pc *net.UDPConn, peer netip.AddrPort) (*dtlsFast, error) {
	st, ok := conn.ConnectionState()
	if !ok {
		return nil, errors.New("no connection state")
	}
	raw, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var ps pionState
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&ps); err != nil {
		return nil, err
	}
	var keyLen, ivLen int
	gcm := true
	switch dtls.CipherSuiteID(ps.CipherSuiteID) {
	case dtls.TLS_PSK_WITH_AES_128_GCM_SHA256:
		keyLen, ivLen = 16, 4
	case dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256:
		keyLen, ivLen, gcm = 32, 12, false
	default:
		return nil, errFastUnsupported
	}
	if len(ps.MasterSecret) != 48 || !ps.IsClient {
		return nil, errors.New("unexpected pion state")
	}
	// key_block = PRF(master_secret, "key expansion", server_random + client_random): client key, server key,
	// client IV, server IV (AEAD suites have no MAC keys).
	seed := append(append([]byte("key expansion"), ps.RemoteRandom[:]...), ps.LocalRandom[:]...)
	kb := make([]byte, 2*keyLen+2*ivLen)
	prf12(sha256.New, kb, ps.MasterSecret, seed)
	clientKey, serverKey := kb[:keyLen], kb[keyLen:2*keyLen]
	clientIV, serverIV := kb[2*keyLen:2*keyLen+ivLen], kb[2*keyLen+ivLen:]
	mk := func(k []byte) (cipher.AEAD, error) {
		if !gcm {
			return chacha20poly1305.New(k)
		}
		b, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	f := &dtlsFast{pc: pc, peer: peer, epoch: ps.LocalEpoch, remoteEpoch: ps.RemoteEpoch, explicitNonce: gcm,
		sendIV: clientIV, recvIV: serverIV}
	if f.sendAEAD, err = mk(clientKey); err != nil {
		return nil, err
	}
	if f.recvAEAD, err = mk(serverKey); err != nil {
		return nil, err
	}
	f.sendSeq.Store(fastSeqStart)
	return f, nil
}

// prf12 is the TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, seed) into out.
func prf12(newHash func() hash.Hash, out, secret, seed []byte) {
	mac := hmac.New(newHash, secret)
	mac.Write(seed)
	a := mac.Sum(nil)
	for n := 0; n < len(out); {
		mac.Reset()
		mac.Write(a)
		mac.Write(seed)
		n += copy(out[n:], mac.Sum(nil))
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(nil)
	}
}

func (f *dtlsFast) nonce(dst, iv []byte, seqNum uint64) []byte {
	dst = append(dst[:0], iv...)
	if f.explicitNonce {
		return binary.BigEndian.AppendUint64(dst, seqNum)
	}
	for i := range 8 {
		dst[4+i] ^= byte(seqNum >> (56 - 8*i))
	}
	return dst
}

type sealScratch struct {
	rec   []byte
	aad   [13]byte
	nonce [12]byte
}

var sealBufs = sync.Pool{New: func() any {
	return &sealScratch{rec: make([]byte, 0, dtlsRecordHeaderLen+8+1+maxPayload+64)}
}}

// write seals plaintext (type || payload) into one application-data record and sends it.
func (f *dtlsFast) write(plaintext []byte) error {
	seq := f.sendSeq.Add(1)
	seqNum := uint64(f.epoch)<<48 | seq&(1<<48-1)
	sc := sealBufs.Get().(*sealScratch)
	defer sealBufs.Put(sc)
	rec := sc.rec[:dtlsRecordHeaderLen]
	rec[0], rec[1], rec[2] = recordAppData, 0xfe, 0xfd
	binary.BigEndian.PutUint64(rec[3:11], seqNum)
	ctLen := len(plaintext) + f.sendAEAD.Overhead()
	aad := sc.aad[:]
	binary.BigEndian.PutUint64(aad[:8], seqNum)
	aad[8], aad[9], aad[10] = recordAppData, 0xfe, 0xfd
	binary.BigEndian.PutUint16(aad[11:], uint16(len(plaintext)))
	nonce := f.nonce(sc.nonce[:0], f.sendIV, seqNum)
	if f.explicitNonce {
		binary.BigEndian.PutUint16(rec[11:13], uint16(8+ctLen))
		rec = binary.BigEndian.AppendUint64(rec, seqNum)
	} else {
		binary.BigEndian.PutUint16(rec[11:13], uint16(ctLen))
	}
	rec = f.sendAEAD.Seal(rec, nonce, plaintext, aad)
	_, err := f.pc.WriteToUDPAddrPort(rec, f.peer)
	sc.rec = rec[:0]
	return err
}

// open decrypts one application-data record in place; ok=false for a foreign epoch, a bad or a replayed record.
func (f *dtlsFast) open(b []byte) (plaintext []byte, ok bool) {
	if len(b) < dtlsRecordHeaderLen || b[0] != recordAppData {
		return nil, false
	}
	seqNum := binary.BigEndian.Uint64(b[3:11])
	if uint16(seqNum>>48) != f.remoteEpoch {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b[11:13]))
	if dtlsRecordHeaderLen+n > len(b) {
		return nil, false
	}
	body := b[dtlsRecordHeaderLen : dtlsRecordHeaderLen+n]
	seq := seqNum & (1<<48 - 1)
	if !f.replayOK(seq) {
		f.rxBad.Add(1)
		return nil, false
	}
	var nonce []byte
	if f.explicitNonce {
		if len(body) < 8+f.recvAEAD.Overhead() {
			return nil, false
		}
		nonce = append(append(f.rxNonce[:0], f.recvIV...), body[:8]...)
		body = body[8:]
	} else {
		nonce = f.nonce(f.rxNonce[:0], f.recvIV, seqNum)
	}
	if len(body) < f.recvAEAD.Overhead() {
		return nil, false
	}
	aad := f.rxAAD[:]
	binary.BigEndian.PutUint64(aad[:8], seqNum)
	aad[8], aad[9], aad[10] = recordAppData, 0xfe, 0xfd
	binary.BigEndian.PutUint16(aad[11:], uint16(len(body)-f.recvAEAD.Overhead()))
	pt, err := f.recvAEAD.Open(body[:0], nonce, body, aad)
	if err != nil {
		f.rxBad.Add(1)
		return nil, false
	}
	f.markSeen(seq)
	return pt, true
}

// replayOK checks seq against the 64-record sliding window.
func (f *dtlsFast) replayOK(seq uint64) bool {
	if !f.seen || seq > f.maxSeq {
		return true
	}
	d := f.maxSeq - seq
	return d < 64 && f.window&(1<<d) == 0
}

func (f *dtlsFast) markSeen(seq uint64) {
	if !f.seen {
		f.seen, f.maxSeq, f.window = true, seq, 1
		return
	}
	if seq > f.maxSeq {
		shift := seq - f.maxSeq
		if shift >= 64 {
			f.window = 0
		} else {
			f.window <<= shift
		}
		f.window |= 1
		f.maxSeq = seq
		return
	}
	f.window |= 1 << (f.maxSeq - seq)
}
