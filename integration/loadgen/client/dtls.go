package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/transport/v5/deadline"

	"ocgate/protocol/dtlsrec"
)

// The PSK suites offered, in the order GnuTLS-based openconnect lists those pion supports (protocol.md §7.3).
var pskSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CCM,
	dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
}

// dtlsChan is an established DTLS channel. pion runs the handshake (and keeps handling anything that is not
// application data); application records are sealed and opened by our own record layer (package dtlsrec) when the suite
// is AES-GCM or ChaCha20-Poly1305 — pion's costs several µs and allocations per record, which made the client
// the bottleneck of bulk runs — otherwise by pion.
type dtlsChan struct {
	pc   *net.UDPConn
	mux  *udpMux
	conn *dtls.Conn
	fast *dtlsrec.Conn // nil: pion's record layer
}

func (d *dtlsChan) write(rec []byte) error {
	if d.fast != nil {
		return d.fast.Write(rec)
	}
	_, err := d.conn.Write(rec)
	return err
}

func (d *dtlsChan) close() {
	d.conn.Close()
	d.mux.close()
	d.pc.Close()
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
	peer := netip.AddrPortFrom(s.peer.Addr(), uint16(port))
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: s.local.Addr().AsSlice()})
	if err != nil {
		return err
	}
	if s.opts.UDPBuffer > 0 {
		// Bursts of a bulk download overflow the default 208 KiB before the reader catches up.
		pc.SetReadBuffer(s.opts.UDPBuffer)
		pc.SetWriteBuffer(s.opts.UDPBuffer)
	}
	mux := newUDPMux(pc, peer)
	d := &dtlsChan{pc: pc, mux: mux}
	d.conn, err = dtls.ClientWithOptions(mux, net.UDPAddrFromAddrPort(peer),
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
		mux.close()
		pc.Close()
		return err
	}
	s.readersWG.Add(1)
	go s.udpReader(d)
	hctx, cancel := context.WithTimeout(ctx, s.opts.DTLSTimeout)
	defer cancel()
	if err := d.conn.HandshakeContext(hctx); err != nil {
		d.close()
		if hctx.Err() != nil {
			return fmt.Errorf("handshake: %w", hctx.Err())
		}
		return fmt.Errorf("handshake: %w", err)
	}
	if st, ok := d.conn.ConnectionState(); ok {
		s.DTLSUsed = st.CipherSuiteID.String()
	}
	if !s.opts.PionRecords {
		if f, err := dtlsrec.Dial(d.conn, pc, peer); err == nil {
			d.fast = f
			mux.fast.Store(f)
		}
	}
	s.mu.Lock()
	if s.Err() != nil {
		s.mu.Unlock()
		d.close()
		return s.Err()
	}
	s.dtls = d
	s.mu.Unlock()
	s.dtlsOK.Store(true)
	// Like openconnect, which starts its MTU detection right away: one DPD request over DTLS. (The server
	// retires pion's side of the association once application data arrives under the new keys.)
	d.write([]byte{TypeDPDReq})
	// Records pion decrypted (all of them without the fast path; before it, those that arrived early).
	s.readersWG.Add(1)
	go s.pionReader(d)
	return nil
}

// udpReader owns the socket: application-data records go to the fast path once it is on, everything else to pion.
func (s *Session) udpReader(d *dtlsChan) {
	defer s.readersWG.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := d.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && s.Err() == nil {
				s.dtlsOK.Store(false)
			}
			return
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != d.mux.peer || n == 0 {
			continue
		}
		f := d.mux.fast.Load()
		if f == nil || buf[0] != dtlsrec.AppData {
			d.mux.push(buf[:n])
			continue
		}
		for b := buf[:n]; len(b) >= dtlsrec.HeaderLen && b[0] == dtlsrec.AppData; {
			rl := dtlsrec.HeaderLen + (int(b[11])<<8 | int(b[12]))
			if rl > len(b) {
				break
			}
			if pt, ok := f.Open(b[:rl]); ok && len(pt) > 0 {
				s.handleDTLSRecord(pt, f.Write)
			}
			b = b[rl:]
		}
	}
}

// pionReader reads the records pion decrypts.
func (s *Session) pionReader(d *dtlsChan) {
	defer s.readersWG.Done()
	buf := make([]byte, 65536)
	write := func(p []byte) error { _, err := d.conn.Write(p); return err }
	if d.fast != nil {
		write = d.fast.Write
	}
	for {
		n, err := d.conn.Read(buf)
		if err != nil {
			if d.fast == nil {
				s.dtlsOK.Store(false)
			}
			return
		}
		if n > 0 {
			s.handleDTLSRecord(buf[:n], write)
		}
	}
}

// handleDTLSRecord handles one decrypted record: type byte || payload (protocol.md §7.5). p may be modified.
func (s *Session) handleDTLSRecord(p []byte, write func([]byte) error) {
	switch p[0] {
	case TypeData:
		s.deliver(p[1:], true)
	case TypeDPDReq:
		// Echo in full: the server may be probing the MTU.
		s.dpdDTLS.Add(1)
		p[0] = TypeDPDResp
		if write(p) == nil {
			s.dpdAnswered.Add(1)
		}
	case TypeDPDResp, TypeKeepalive:
	case TypeCompressed:
		s.rxDropped.Add(1)
	default:
		s.unknown.Add(1)
	}
}

// udpMux is the net.PacketConn pion uses: it reads what udpReader passes on and writes straight to the socket.
type udpMux struct {
	pc   *net.UDPConn
	peer netip.AddrPort
	in   chan []byte
	fast atomic.Pointer[dtlsrec.Conn]
	done chan struct{}
	once sync.Once

	readDL *deadline.Deadline // pion's read deadline
}

func newUDPMux(pc *net.UDPConn, peer netip.AddrPort) *udpMux {
	return &udpMux{pc: pc, peer: peer, in: make(chan []byte, 64), done: make(chan struct{}), readDL: deadline.New()}
}

func (m *udpMux) push(b []byte) {
	select {
	case m.in <- append([]byte(nil), b...):
	default: // pion is behind: drop, as a full socket buffer would
	}
}

func (m *udpMux) close() { m.once.Do(func() { close(m.done) }) }

func (m *udpMux) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case b := <-m.in:
		return copy(p, b), net.UDPAddrFromAddrPort(m.peer), nil
	case <-m.done:
		return 0, nil, net.ErrClosed
	case <-m.readDL.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (m *udpMux) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-m.done:
		return 0, net.ErrClosed
	default:
	}
	return m.pc.WriteToUDPAddrPort(p, m.peer)
}

func (m *udpMux) Close() error        { m.close(); return nil }
func (m *udpMux) LocalAddr() net.Addr { return m.pc.LocalAddr() }

func (m *udpMux) SetDeadline(t time.Time) error { return m.SetReadDeadline(t) }

func (m *udpMux) SetReadDeadline(t time.Time) error {
	m.readDL.Set(t)
	return nil
}

func (m *udpMux) SetWriteDeadline(time.Time) error { return nil }
