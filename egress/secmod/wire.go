// Package secmod is the security module: a child process (this binary re-executed) that holds the TLS private key
// and the credential stores, and answers the network-facing process over a socketpair — it signs handshakes and
// checks passwords, and never hands out a secret. It has no listening socket and no other input.
//
//	network process ──ctl socketpair──► monitor (the starting uid; holds no secret; restarts workers)
//	       │                                │ fork+exec, one socketpair per worker, its end sent back (SCM_RIGHTS)
//	       └──────── rpc socketpair ───────► worker (opens the key and password file, drops to sec_mod_user, serves)
//
// The monitor keeps the privileges the server started with so that a restarted worker (after a crash, or on
// reload) can open root-owned files before dropping; it reads nothing but two small control messages. A worker
// loads its secrets with a Loader the binary supplies (so this package knows no configuration format), sends a
// hello with the public part (the certificate chain), and serves requests until its socket closes.
package secmod

// The wire format, the same on both sockets: one message per SOCK_SEQPACKET datagram,
//
//	[4 bytes big-endian length of what follows the 5-byte header][1 byte version][JSON]
//
// A message whose declared length does not match the datagram, whose version is not wireVersion, that exceeds
// maxMessage or that does not decode is refused: the worker answers it with codeMalformed (when it has an id),
// logs it and counts it.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

const (
	wireVersion = 1
	headerSize  = 5
	maxMessage  = 64 << 10 // a certificate chain in the hello is the largest message
	maxArgs     = 16 << 10 // a request's arguments
)

// request is a call from the network process.
type request struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// reply answers request ID (ID 0: the worker's hello).
type reply struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Err    string          `json:"err,omitempty"`
	Code   string          `json:"code,omitempty"` // one of the code… constants when Err is set
}

// Error codes a caller branches on.
const (
	codeMalformed = "malformed" // the request was refused before it ran
	codeDenied    = "denied"    // bad credentials
	codeLocked    = "locked"    // locked account (the password was right)
	codeFailed    = "failed"    // the operation ran and failed
)

// errMalformed is a message that breaks the wire format.
var errMalformed = errors.New("malformed message")

// encode frames v.
func encode(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(body) > maxMessage-headerSize {
		return nil, fmt.Errorf("message of %d bytes exceeds the limit of %d", len(body), maxMessage)
	}
	b := make([]byte, headerSize, headerSize+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	b[4] = wireVersion
	return append(b, body...), nil
}

// decode checks the frame in msg and unmarshals its body into v.
func decode(msg []byte, v any) error {
	if len(msg) < headerSize {
		return fmt.Errorf("%w: %d bytes, shorter than the header", errMalformed, len(msg))
	}
	if n := binary.BigEndian.Uint32(msg); int64(n) != int64(len(msg)-headerSize) {
		return fmt.Errorf("%w: declared length %d, datagram holds %d", errMalformed, n, len(msg)-headerSize)
	}
	if msg[4] != wireVersion {
		return fmt.Errorf("%w: version %d, want %d", errMalformed, msg[4], wireVersion)
	}
	if err := json.Unmarshal(msg[headerSize:], v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// send writes one framed message on c.
func send(c *net.UnixConn, v any) error {
	b, err := encode(v)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}
