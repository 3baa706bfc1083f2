package protocol

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"ocgate/config"
	"ocgate/protocol/dtls"
)

// FuzzConnectHeaders: whatever headers a client's CONNECT carries, reading what the server takes from them
// (the DTLS offer, the platform, the MTU, the compression offers, the hostname) never panics, the MTU stays in
// range, and a hostname the server echoes back cannot inject a header line.
func FuzzConnectHeaders(f *testing.F) {
	f.Add("X-CSTP-Base-MTU: 1406\r\nX-CSTP-Hostname: laptop\r\nX-DTLS12-CipherSuite: PSK-NEGOTIATE:AES128-GCM-SHA256\r\n" +
		"X-CSTP-Accept-Encoding: oc-lz4,lzs\r\nX-AnyConnect-Identifier-Platform: android\r\n")
	f.Add("X-CSTP-Base-MTU: -1\r\nX-DTLS-Master-Secret: 00\r\nX-DTLS12-CipherSuite: ECDHE-RSA-AES256-GCM-SHA384\r\n")
	f.Add("X-CSTP-Hostname: a\rb\r\nX-CSTP-Accept-Encoding: ,,lzs,\r\n")
	cfg := config.Default()
	cfg.Compression = true
	s := &Server{cfg: cfg}
	f.Fuzz(func(t *testing.T, headers string) {
		req, err := readRequest(bufio.NewReader(strings.NewReader("CONNECT /CSCOSSLC/tunnel HTTP/1.1\r\n" + headers + "\r\n")))
		if err != nil {
			return
		}
		offersPSK(req)
		isMobile(req, &Session{})
		for _, remote := range []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")} {
			base, mtu := tunnelMTU(req, remote, cfg.MTU)
			if base < 1280 || base > 1500 || mtu <= 0 || mtu > base {
				t.Fatalf("base MTU %d, tunnel MTU %d", base, mtu)
			}
		}
		s.chooseCodec(req.get("X-CSTP-Accept-Encoding"))
		s.chooseCodec(req.get("X-DTLS-Accept-Encoding"))
		dtls.LegacyOffer(req.get("X-DTLS-Master-Secret"), req.get("X-DTLS12-CipherSuite"))
		if hn := req.get("X-CSTP-Hostname"); config.ValidHostname(hn) && strings.ContainsAny(hn, "\r\n:\x00") {
			t.Fatalf("hostname %q would be echoed in a header", hn)
		}
	})
}
