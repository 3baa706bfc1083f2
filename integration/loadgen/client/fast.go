package client

// The client's own DTLS record layer for application data after pion's handshake: package dtlsrec, the one the
// server's fast path uses (AES-GCM, ChaCha20-Poly1305; one AEAD call per record, replay window included).

import (
	"net"
	"net/netip"

	"github.com/pion/dtls/v3"

	"ocgate/protocol/dtlsrec"
)

const (
	dtlsRecordHeaderLen = dtlsrec.HeaderLen
	recordAppData       = dtlsrec.AppData
)

type dtlsFast = dtlsrec.Conn

func newDTLSFast(conn *dtls.Conn, pc *net.UDPConn, peer netip.AddrPort) (*dtlsFast, error) {
	return dtlsrec.Dial(conn, pc, peer)
}
