package dtls

// A ClientHello whose App-ID this server has no registration for: its session lives on another instance, behind a
// balancer that hashed the client's UDP elsewhere than its TLS connection (docs/architecture.md, "Several
// instances"), or it has ended here. Dropping it would leave openconnect waiting about 12 s for an answer before it
// brings the tunnel up on CSTP (docs/protocol.md §7.6); a fatal alert makes it give up DTLS at once, run on CSTP,
// and retry DTLS every 60 s. The alert is plaintext, as every alert before a handshake's keys, and smaller than the
// ClientHello that caused it (no amplification); at most unknownAlertsPerSecond are sent, the rest dropped.

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// unknownAlertsPerSecond bounds the alerts sent for unknown App-IDs, whole server.
const unknownAlertsPerSecond = 200

// alertHandshakeFailure is a DTLS alert record: fatal (2), handshake_failure (40). Bytes 1-10 (record version, epoch
// and sequence number) are copied from the ClientHello it answers: GnuTLS sometimes discards the first alert (it
// arrives within microseconds of the ClientHello), and its replay window then discards every later alert that
// reuses a sequence number, so each answer to a retransmitted ClientHello carries that ClientHello's (increasing)
// number and the client gives up at its next retransmission, a second later.
var alertHandshakeFailure = [15]byte{21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 40}

// unknownLimit is the rate limit of refuseUnknown: the current second and the alerts sent in it.
type unknownLimit struct {
	second atomic.Int64
	sent   atomic.Int32
}

func (l *unknownLimit) allow(now time.Time) bool {
	s := now.Unix()
	if old := l.second.Load(); old != s && l.second.CompareAndSwap(old, s) {
		l.sent.Store(0)
	}
	return l.sent.Add(1) <= unknownAlertsPerSecond
}

// refuseUnknown answers the ClientHello hello, from to, whose App-ID has no registration, with a fatal alert.
func (d *Server) refuseUnknown(hello []byte, to netip.AddrPort) {
	d.stats.dropped.Add(1)
	d.stats.refusedUnknown.Add(1)
	if !d.unknownLimit.allow(time.Now()) {
		return
	}
	rec := alertHandshakeFailure
	copy(rec[1:11], hello[1:11]) // the ClientHello's record version, epoch (0) and sequence number
	d.pc.WriteToUDPAddrPort(rec[:], to)
}
