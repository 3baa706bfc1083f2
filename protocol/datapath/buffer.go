package datapath

import "sync"

// Packets towards the client travel in Buffers with room around them, as wireguard-go's tun.Device offsets do: the
// datapath copies a packet into the middle of a Buffer once, the session takes the Buffer over (DeliverBuffer), and
// the carrier writes its framing into the room in place — the CSTP header (8 bytes) before the packet, or the DTLS
// record header, explicit nonce and packet type (13+8+1) before it and the AEAD tag (16) after it — so that the
// packet is never copied again on its way to the socket.
const (
	// Headroom is the room before the packet: the largest header a carrier writes in place, rounded up.
	Headroom = 32
	// Tailroom is the room after the packet's capacity: an AEAD tag.
	Tailroom = 16
	// MaxPacket is the longest packet a Buffer holds (the CSTP frame's payload limit).
	MaxPacket = 16384
	// smallPacket is the capacity of the common Buffer, which fits a packet of any usual MTU.
	smallPacket = 2048
)

// Buffer holds one packet in B[Headroom:Headroom+N], with Headroom bytes before it and at least Tailroom after
// it that its current owner may write.
type Buffer struct {
	B []byte
	N int
}

var (
	smallBuffers = sync.Pool{New: func() any { return &Buffer{B: make([]byte, Headroom+smallPacket+Tailroom)} }}
	bigBuffers   = sync.Pool{New: func() any { return &Buffer{B: make([]byte, Headroom+MaxPacket+Tailroom)} }}
)

// GetBuffer returns a pooled Buffer for a packet of n bytes (N = n; the bytes are not cleared), or nil when n is
// more than MaxPacket.
func GetBuffer(n int) *Buffer {
	var b *Buffer
	switch {
	case n <= smallPacket:
		b = smallBuffers.Get().(*Buffer)
	case n <= MaxPacket:
		b = bigBuffers.Get().(*Buffer)
	default:
		return nil
	}
	b.N = n
	return b
}

// Packet is the packet: B[Headroom:Headroom+N].
func (b *Buffer) Packet() []byte { return b.B[Headroom : Headroom+b.N] }

// Release returns b to its pool; its owner must not use it afterwards.
func (b *Buffer) Release() {
	if len(b.B) == Headroom+smallPacket+Tailroom {
		smallBuffers.Put(b)
	} else {
		bigBuffers.Put(b)
	}
}

// DeliverBuf hands a packet to the session without another copy when the session takes Buffers (DeliverBuffer),
// else through Deliver. Either way b is no longer the caller's.
func (s *Session) DeliverBuf(b *Buffer) {
	if s.DeliverBuffer != nil {
		s.DeliverBuffer(b)
		return
	}
	s.Deliver(b.Packet())
	b.Release()
}

// DeliverBufHeld is DeliverBuf for a packet of a burst: the session may hold it until KickSender.
func (s *Session) DeliverBufHeld(b *Buffer) {
	if s.DeliverHeld != nil {
		s.DeliverHeld(b)
		return
	}
	s.DeliverBuf(b)
}

// KickSender ends a burst of DeliverBufHeld calls: what the session holds goes out.
func (s *Session) KickSender() {
	if s.Kick != nil {
		s.Kick()
	}
}

// DeliverCopyHeld is DeliverBufHeld with a copy of pkt in a pooled buffer; false when pkt is longer than any
// buffer holds (it is dropped).
func (s *Session) DeliverCopyHeld(pkt []byte) bool {
	b := GetBuffer(len(pkt))
	if b == nil {
		return false
	}
	copy(b.Packet(), pkt)
	s.DeliverBufHeld(b)
	return true
}
