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

// The wire format: one message per SOCK_SEQPACKET datagram,
//
//	[4 bytes big-endian length of what follows the 5-byte header][1 byte version][body]
//
// Version 1 (wireVersion) has a JSON body: the control socket's messages and a worker's init. Version 2
// (rpcVersion) is the rpc socket's requests and replies: a binary envelope around the JSON of an operation's
// arguments or result,
//
//	request: [8 bytes id][1 byte n][n bytes op][arguments, JSON; none: empty]
//	reply:   [8 bytes id][1 byte n][n bytes code][2 bytes m][m bytes err][result, JSON; none: empty]
//
// (all integers big-endian), so that neither side encodes and scans the JSON twice, once inside an envelope of
// JSON: that envelope was a third of the network process's JSON work per login. A message whose declared length
// does not match the datagram, whose version is not the one its socket and direction expect, that exceeds
// maxMessage, whose envelope is cut short or whose arguments are not one JSON value is refused: the worker
// answers it with codeMalformed (when it has an id), logs it and counts it.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

const (
	wireVersion = 1 // JSON bodies
	rpcVersion  = 2 // requests and replies
	headerSize  = 5
	maxMessage  = 64 << 10 // a certificate chain in the hello is the largest message
	maxArgs     = 16 << 10 // a request's arguments
	maxErr      = 4 << 10  // a reply's error message (longer ones are cut)
)

// request is a call from the network process (encodeRequest).
type request struct {
	ID   uint64
	Op   string
	Args json.RawMessage
}

// reply answers request ID (ID 0: the worker's hello) (encodeReply).
type reply struct {
	ID     uint64
	Result json.RawMessage
	Err    string
	Code   string // one of the code… constants when Err is set
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
	return frame(append(b, body...), wireVersion)
}

// frameBody checks the frame in msg and returns its body.
func frameBody(msg []byte, version byte) ([]byte, error) {
	if len(msg) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", errMalformed, len(msg))
	}
	if n := binary.BigEndian.Uint32(msg); int64(n) != int64(len(msg)-headerSize) {
		return nil, fmt.Errorf("%w: declared length %d, datagram holds %d", errMalformed, n, len(msg)-headerSize)
	}
	if msg[4] != version {
		return nil, fmt.Errorf("%w: version %d, want %d", errMalformed, msg[4], version)
	}
	return msg[headerSize:], nil
}

// frame completes the header of b (headerSize bytes reserved, then the body).
func frame(b []byte, version byte) ([]byte, error) {
	if len(b) > maxMessage {
		return nil, fmt.Errorf("message of %d bytes exceeds the limit of %d", len(b)-headerSize, maxMessage)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-headerSize))
	b[4] = version
	return b, nil
}

// decode checks the frame in msg and unmarshals its JSON body into v.
func decode(msg []byte, v any) error {
	body, err := frameBody(msg, wireVersion)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// encodeRequest frames req.
func encodeRequest(req request) ([]byte, error) {
	if len(req.Op) > 255 {
		return nil, fmt.Errorf("operation name of %d bytes", len(req.Op))
	}
	b := make([]byte, headerSize, headerSize+9+len(req.Op)+len(req.Args))
	b = binary.BigEndian.AppendUint64(b, req.ID)
	b = append(b, byte(len(req.Op)))
	b = append(b, req.Op...)
	return frame(append(b, req.Args...), rpcVersion)
}

// envelopeHead reads what requests and replies start with: the id and a name (op or code), each a length-prefixed
// byte string; ok is false when body is cut short.
func envelopeHead(body []byte) (id uint64, name string, rest []byte, ok bool) {
	if len(body) < 9 {
		return 0, "", nil, false
	}
	id, n := binary.BigEndian.Uint64(body), int(body[8])
	if body = body[9:]; len(body) < n {
		return id, "", nil, false
	}
	return id, string(body[:n]), body[n:], true
}

// decodeRequest reads a request. The id is set as soon as it was read, for the refusal of a request whose rest
// is malformed.
func decodeRequest(msg []byte) (request, error) {
	var req request
	body, err := frameBody(msg, rpcVersion)
	if err != nil {
		return req, err
	}
	var ok bool
	if req.ID, req.Op, body, ok = envelopeHead(body); !ok {
		return req, fmt.Errorf("%w: request cut short", errMalformed)
	}
	if len(body) > 0 {
		if !json.Valid(body) {
			return req, fmt.Errorf("%w: arguments are not JSON", errMalformed)
		}
		req.Args = bytes.Clone(body) // (msg is the reader's buffer)
	}
	return req, nil
}

// encodeReply frames rep; an error message longer than maxErr is cut.
func encodeReply(rep reply) ([]byte, error) {
	if len(rep.Code) > 255 {
		return nil, fmt.Errorf("error code of %d bytes", len(rep.Code))
	}
	msg := rep.Err[:min(len(rep.Err), maxErr)]
	b := make([]byte, headerSize, headerSize+11+len(rep.Code)+len(msg)+len(rep.Result))
	b = binary.BigEndian.AppendUint64(b, rep.ID)
	b = append(b, byte(len(rep.Code)))
	b = append(b, rep.Code...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	return frame(append(b, rep.Result...), rpcVersion)
}

// decodeReply reads a reply. Its result is checked where it is unmarshalled.
func decodeReply(msg []byte) (reply, error) {
	var rep reply
	body, err := frameBody(msg, rpcVersion)
	if err != nil {
		return rep, err
	}
	var ok bool
	rep.ID, rep.Code, body, ok = envelopeHead(body)
	if !ok || len(body) < 2 || len(body)-2 < int(binary.BigEndian.Uint16(body)) {
		return rep, fmt.Errorf("%w: reply cut short", errMalformed)
	}
	m := int(binary.BigEndian.Uint16(body))
	rep.Err = string(body[2 : 2+m])
	if res := body[2+m:]; len(res) > 0 {
		rep.Result = bytes.Clone(res) // (msg is the reader's buffer)
	}
	return rep, nil
}

// send writes one framed message on c.
func send(c *net.UnixConn, v any) error {
	return write(c)(encode(v))
}

// write returns a function writing a framed message on c, or returning the error of its framing.
func write(c *net.UnixConn) func([]byte, error) error {
	return func(b []byte, err error) error {
		if err != nil {
			return err
		}
		_, err = c.Write(b)
		return err
	}
}
