package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
)

// The PSK suites offered, in the order GnuTLS-based openconnect lists those pion supports (protocol.md §7.3).
var pskSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CCM,
	dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
}

// startDTLS runs the DTLS 1.2 PSK handshake of PSK-NEGOTIATE mode (protocol.md §7.2–7.3): key = TLS exporter
// "EXPORTER-openconnect-psk" (32 bytes, no context) of the CONNECT connection, identity "psk", App-ID in the
// ClientHello session_id, UDP to the TCP peer's address and X-DTLS-Port.
func (s *Session) startDTLS(ctx context.Context) error {
	get := func(k string) string {
		if v := s.Header[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if get("X-DTLS-App-ID") == "" {
		if get("X-DTLS-Session-ID") != "" {
			return errors.New("server chose legacy DTLS (not supported)")
		}
		return errors.New("server offered no DTLS")
	}
	if cs := get("X-DTLS-CipherSuite"); cs != "PSK-NEGOTIATE" {
		return fmt.Errorf("X-DTLS-CipherSuite %q, want PSK-NEGOTIATE", cs)
	}
	appID, err := hex.DecodeString(get("X-DTLS-App-ID"))
	if err != nil || len(appID) == 0 || len(appID) > 32 {
		return fmt.Errorf("malformed X-DTLS-App-ID %.80q", get("X-DTLS-App-ID"))
	}
	port, err := strconv.Atoi(get("X-DTLS-Port"))
	if err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("bad X-DTLS-Port %.20q", get("X-DTLS-Port"))
	}
	cs := s.conn.ConnectionState()
	psk, err := cs.ExportKeyingMaterial("EXPORTER-openconnect-psk", nil, 32)
	if err != nil {
		return fmt.Errorf("TLS exporter: %w", err)
	}
	raddr := &net.UDPAddr{IP: s.peer.Addr().AsSlice(), Port: port}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: s.local.Addr().AsSlice()})
	if err != nil {
		return err
	}
	dc, err := dtls.ClientWithOptions(pc, raddr,
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		dtls.WithPSKIdentityHint([]byte("psk")),
		dtls.WithCipherSuites(pskSuites...),
		dtls.WithExtendedMasterSecret(dtls.DisableExtendedMasterSecret), // as GnuTLS openconnect
		dtls.WithClientHelloMessageHook(func(ch handshake.MessageClientHello) handshake.Message {
			ch.SessionID = appID
			return &ch
		}),
	)
	if err != nil {
		pc.Close()
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, s.opts.DTLSTimeout)
	defer cancel()
	if err := dc.HandshakeContext(hctx); err != nil {
		dc.Close()
		pc.Close()
		if hctx.Err() != nil {
			return fmt.Errorf("handshake: %w", hctx.Err())
		}
		return fmt.Errorf("handshake: %w", err)
	}
	if st, ok := dc.ConnectionState(); ok {
		s.DTLSUsed = st.CipherSuiteID.String()
	}
	s.mu.Lock()
	if s.Err() != nil {
		s.mu.Unlock()
		dc.Close()
		pc.Close()
		return s.Err()
	}
	s.dconn, s.udp = dc, pc
	s.mu.Unlock()
	s.dtlsOK.Store(true)
	s.readersWG.Add(1)
	go s.dtlsReader(dc)
	return nil
}

// dtlsReader reads records (type byte || payload) until DTLS fails; then sending stays on CSTP.
func (s *Session) dtlsReader(dc *dtls.Conn) {
	defer s.readersWG.Done()
	buf := make([]byte, 65536)
	for {
		n, err := dc.Read(buf)
		if err != nil {
			s.dtlsOK.Store(false)
			return
		}
		if n == 0 {
			continue
		}
		switch buf[0] {
		case TypeData:
			s.deliver(buf[1:n], true)
		case TypeDPDReq:
			// Echo in full: the server may be probing the MTU (protocol.md §7.5).
			s.dpdDTLS.Add(1)
			buf[0] = TypeDPDResp
			if _, err := dc.Write(buf[:n]); err == nil {
				s.dpdAnswered.Add(1)
			}
		case TypeDPDResp, TypeKeepalive:
		case TypeCompressed:
			s.rxDropped.Add(1)
		default:
			s.unknown.Add(1)
		}
	}
}
