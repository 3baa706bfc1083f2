// Package protocol is the server side of the OpenConnect protocol (AnyConnect-compatible, docs/protocol.md):
// authentication over HTTPS, sessions and their cookies, and tunnels that carry a session's IP packets over CSTP
// (TLS) and DTLS to and from a datapath (package protocol/datapath: the in-process netstack, or a kernel TUN).
//
// A connection, from TLS accept to tunnel:
//
//	Server.Serve ── accept, admit (bans, rate_limit_ms, max_clients) ──► serveConn (one goroutine per connection)
//	  TLS handshake under a deadline, then HTTP/1.1 requests until auth_timeout    (server.go, httpmsg.go)
//	  POST / and /auth: the XML login exchange ──► a Session and its webvpn cookie  (login.go, authxml.go)
//	  CONNECT /CSCOSSLC/tunnel with the cookie ──► handleConnect                    (connect.go)
//	      check the cookie, register DTLS (App-ID and PSK), attach the session (address lease, datapath port),
//	      run the connect script, write the CONNECT response
//	  the connection becomes a tunnel: readLoop and writeLoop move CSTP frames      (tunnel.go)
//	  the client's DTLS handshake, on the shared UDP socket, joins the tunnel       (tunnel_dtls.go)
//
// A Session outlives its tunnels (session.go): a client that reconnects with its cookie gets the same address and
// datapath port; the session ends on logout, cookie expiry, session timeout or Shutdown.
//
// Sub-packages:
//
//	protocol/cstp      CSTP framing (header, packet types); a leaf shared with the client
//	protocol/dtls      the DTLS channel: demultiplexer of the UDP socket, pion's handshake, established associations
//	protocol/dtlsrec   DTLS 1.2 application records sealed and opened without pion (the fast path); a leaf
//	protocol/datapath  the interface between sessions and the packet side
//	protocol/client    the client side in Go (load generator, tests); it imports no package that imports protocol
package protocol
