package protocol

// The DTLS fast path. pion runs the handshake (and stays in charge of handshake retransmissions and alerts), but
// its record layer costs ~7 µs and a dozen allocations per record (spike-dtls-netstack.md), which kept ocgate's
// DTLS at half of ocserv's throughput. Once the handshake is done we derive the same record keys from pion's
// exported state (master secret and randoms, TLS 1.2 PRF) and seal and open application-data records ourselves:
// one AEAD call, no allocation, straight onto the shared UDP socket. RFC 6347 §4.1.2.6 replay window included.
// Suites: AES-GCM (RFC 5288, explicit nonce) and ChaCha20-Poly1305 (RFC 7905); others stay on pion's path.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
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
	"golang.org/x/net/ipv4"
)

const (
	dtlsRecordHeaderLen = 13
	recordAppData       = 23
	// fastSeqStart keeps our sequence numbers clear of the few pion used (Finished, and any retransmission).
	fastSeqStart = 1 << 20
)

// pionState mirrors the fields of pion's serialized State that we need (gob matches by name).
type pionState struct {
	LocalEpoch    uint16
	LocalRandom   [32]byte
	RemoteRandom  [32]byte
	CipherSuiteID uint16
	MasterSecret  []byte
	IsClient      bool
}

type dtlsFast struct {
	pc    *net.UDPConn
	peer  netip.AddrPort
	epoch uint16

	sendAEAD, recvAEAD cipher.AEAD
	sendIV, recvIV     []byte
	explicitNonce      bool // AES-GCM: 8-byte nonce in the record; ChaCha20: none
	sendSeq            atomic.Uint64

	// owned by the single reader: the replay window and scratch space
	maxSeq  uint64
	window  uint64
	seen    bool
	rxAAD   [13]byte
	rxNonce [12]byte
	rxBad   atomic.Uint64 // records that failed authentication or were replayed
}

var errFastUnsupported = errors.New("suite not on the fast path")

// newDTLSFast derives the record keys of an established pion connection.
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
	newHash := sha256.New
	gcm := true
	switch dtls.CipherSuiteID(ps.CipherSuiteID) {
	case dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
		keyLen, ivLen = 16, 4
	case dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		keyLen, ivLen, newHash = 32, 4, sha512.New384
	case dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256:
		keyLen, ivLen, gcm = 32, 12, false
	default:
		return nil, errFastUnsupported
	}
	if len(ps.MasterSecret) != 48 || ps.IsClient {
		return nil, errors.New("unexpected pion state")
	}
	// key_block = PRF(master_secret, "key expansion", server_random + client_random): client key, server key,
	// client IV, server IV (AEAD suites have no MAC keys).
	seed := append(append([]byte("key expansion"), ps.LocalRandom[:]...), ps.RemoteRandom[:]...)
	kb := make([]byte, 2*keyLen+2*ivLen)
	prf12(newHash, kb, ps.MasterSecret, seed)
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
	f := &dtlsFast{pc: pc, peer: peer, epoch: ps.LocalEpoch, explicitNonce: gcm, sendIV: serverIV, recvIV: clientIV}
	if f.sendAEAD, err = mk(serverKey); err != nil {
		return nil, err
	}
	if f.recvAEAD, err = mk(clientKey); err != nil {
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
	if f.explicitNonce {
		dst = append(dst[:0], iv...)
		return binary.BigEndian.AppendUint64(dst, seqNum)
	}
	dst = append(dst[:0], iv...)
	for i := range 8 {
		dst[4+i] ^= byte(seqNum >> (56 - 8*i))
	}
	return dst
}

// sealScratch holds everything a write needs, so that nothing escapes to the heap per record (slices of stack
// arrays passed to the AEAD interface would).
type sealScratch struct {
	rec   []byte
	aad   [13]byte
	nonce [12]byte
}

var sealBufs = sync.Pool{New: func() any {
	return &sealScratch{rec: make([]byte, 0, dtlsRecordHeaderLen+8+1+maxCSTPPayload+64)}
}}

// write seals plaintext (type || payload) into one application-data record and sends it.
func (f *dtlsFast) write(plaintext []byte) error {
	sc := sealBufs.Get().(*sealScratch)
	defer sealBufs.Put(sc)
	rec := f.seal(sc, sc.rec[:0], plaintext)
	_, err := f.pc.WriteToUDPAddrPort(rec, f.peer)
	sc.rec = rec[:0]
	return err
}

// seal appends to rec (empty, with room) one application-data record of plaintext, using sc's scratch space.
func (f *dtlsFast) seal(sc *sealScratch, rec, plaintext []byte) []byte {
	seq := f.sendSeq.Add(1)
	seqNum := uint64(f.epoch)<<48 | seq&(1<<48-1)
	rec = rec[:dtlsRecordHeaderLen]
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
	return f.sendAEAD.Seal(rec, nonce, plaintext, aad)
}

// dtlsBatch collects sealed records of one tunnel and sends them with one sendmmsg(2) (x/net/ipv4 WriteBatch)
// when the tunnel's queue runs dry or the batch is full. It belongs to the tunnel's writer goroutine.
type dtlsBatch struct {
	f    *dtlsFast
	pc   *ipv4.PacketConn
	addr net.Addr
	sc   sealScratch
	bufs [dtlsBatchLen][]byte
	msgs []ipv4.Message
	n    int
}

const dtlsBatchLen = 32

func newDTLSBatch(f *dtlsFast) *dtlsBatch {
	b := &dtlsBatch{f: f, pc: ipv4.NewPacketConn(f.pc), addr: net.UDPAddrFromAddrPort(f.peer),
		msgs: make([]ipv4.Message, dtlsBatchLen)}
	for i := range b.msgs {
		b.msgs[i].Buffers = make([][]byte, 1)
		b.msgs[i].Addr = b.addr
	}
	return b
}

// add seals plaintext into the batch, sending the batch first if it is full.
func (b *dtlsBatch) add(plaintext []byte) error {
	if b.n == dtlsBatchLen {
		if err := b.flush(); err != nil {
			return err
		}
	}
	// Buffers are allocated as deep as the batches get (a quiet tunnel holds one or two), sized for the usual
	// MTU-sized record; a bigger one grows its buffer once.
	if need := dtlsRecordHeaderLen + 8 + len(plaintext) + 16; cap(b.bufs[b.n]) < need {
		b.bufs[b.n] = make([]byte, 0, max(need, 2048))
	}
	b.bufs[b.n] = b.f.seal(&b.sc, b.bufs[b.n][:0], plaintext)
	b.msgs[b.n].Buffers[0] = b.bufs[b.n]
	b.n++
	return nil
}

// flush sends what the batch holds.
func (b *dtlsBatch) flush() error {
	msgs := b.msgs[:b.n]
	for len(msgs) > 0 {
		n, err := b.pc.WriteBatch(msgs, 0)
		if err != nil {
			b.n = 0
			return err
		}
		msgs = msgs[n:]
	}
	b.n = 0
	return nil
}

// open decrypts the first application-data record of datagram b in place and returns its plaintext, or nil if
// the datagram is not one (the caller passes those to pion), or ok=false for a bad/replayed record (dropped).
func (f *dtlsFast) open(b []byte) (plaintext []byte, ok bool) {
	if len(b) < dtlsRecordHeaderLen || b[0] != recordAppData {
		return nil, false
	}
	seqNum := binary.BigEndian.Uint64(b[3:11])
	if uint16(seqNum>>48) != f.epoch {
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

// replayOK checks seq against the 64-record sliding window (RFC 6347 §4.1.2.6).
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
