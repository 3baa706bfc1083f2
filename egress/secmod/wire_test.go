package secmod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestRPCEnvelope(t *testing.T) {
	t.Run("request round trip", func(t *testing.T) {
		for _, req := range []request{{ID: 7, Op: opSign, Args: []byte(`{"key":"k"}`)}, {ID: 1 << 60, Op: "x"}} {
			b, err := encodeRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeRequest(b)
			if err != nil || got.ID != req.ID || got.Op != req.Op || !bytes.Equal(got.Args, req.Args) {
				t.Fatalf("%+v came back as %+v, %v", req, got, err)
			}
		}
	})
	t.Run("reply round trip", func(t *testing.T) {
		for _, rep := range []reply{{ID: 3, Result: []byte(`{"sig":"AA=="}`)}, {ID: 4, Err: "bad", Code: codeDenied}, {}} {
			b, err := encodeReply(rep)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeReply(b)
			if err != nil || got.ID != rep.ID || got.Err != rep.Err || got.Code != rep.Code || !bytes.Equal(got.Result, rep.Result) {
				t.Fatalf("%+v came back as %+v, %v", rep, got, err)
			}
		}
	})
	t.Run("the decoded request does not alias the reader's buffer", func(t *testing.T) {
		b, _ := encodeRequest(request{ID: 1, Op: "op", Args: []byte(`[1]`)})
		got, _ := decodeRequest(b)
		b[len(b)-2] = '2'
		if string(got.Args) != "[1]" {
			t.Fatalf("args changed with the buffer: %s", got.Args)
		}
	})
	frameOf := func(version byte, body []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		return append(append(b, version), body...)
	}
	id := binary.BigEndian.AppendUint64(nil, 9)
	for name, msg := range map[string][]byte{
		"JSON frame":            frameOf(wireVersion, []byte(`{"id":9,"op":"sign"}`)),
		"short header":          {0, 0},
		"length mismatch":       {0, 0, 0, 9, rpcVersion, 1},
		"no id":                 frameOf(rpcVersion, []byte{0, 0, 0}),
		"op cut short":          frameOf(rpcVersion, append(append(id, 5), "sig"...)),
		"arguments not JSON":    frameOf(rpcVersion, append(append(id, 4), `sign{"a":`...)),
		"two JSON values":       frameOf(rpcVersion, append(append(id, 4), `sign{}{}`...)),
		"trailing after a JSON": frameOf(rpcVersion, append(append(id, 4), `sign{} x`...)),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeRequest(msg); !errors.Is(err, errMalformed) {
				t.Fatalf("decodeRequest: %v, want a malformed message", err)
			}
		})
	}
	t.Run("reply cut short", func(t *testing.T) {
		b, _ := encodeReply(reply{ID: 1, Err: "some error", Code: codeFailed})
		for n := headerSize; n < len(b); n++ {
			cut := append([]byte(nil), b[:n]...)
			binary.BigEndian.PutUint32(cut, uint32(n-headerSize))
			if _, err := decodeReply(cut); !errors.Is(err, errMalformed) {
				t.Fatalf("%d bytes: %v, want a malformed message", n, err)
			}
		}
	})
	t.Run("limits", func(t *testing.T) {
		if _, err := encodeRequest(request{Op: strings.Repeat("x", 256)}); err == nil {
			t.Error("an operation name of 256 bytes was framed")
		}
		if _, err := encodeRequest(request{Op: "x", Args: bytes.Repeat([]byte("1"), maxMessage)}); err == nil {
			t.Error("a request over maxMessage was framed")
		}
		b, err := encodeReply(reply{Err: strings.Repeat("e", 0x10000+5)})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decodeReply(b); err != nil || len(got.Err) != maxErr {
			t.Errorf("a long error came back as %d bytes, %v; want it cut to %d", len(got.Err), err, maxErr)
		}
	})
}

// The worker decodes what the network process sends (a process that parses client bytes, so not trusted): any
// input is refused with an error or decoded into a request that encodes back to the same frame; never a panic.
// Replies, which the network process decodes, likewise.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, req := range []request{{ID: 7, Op: opSign, Args: []byte(`{"key":"k"}`)}, {ID: 1, Op: "x"}} {
		b, _ := encodeRequest(req)
		f.Add(b)
	}
	for _, rep := range []reply{{ID: 3, Result: []byte(`{"sig":"AA=="}`)}, {ID: 4, Err: "bad", Code: codeDenied}} {
		b, _ := encodeReply(rep)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if req, err := decodeRequest(msg); err == nil {
			b, err := encodeRequest(req)
			if err != nil {
				t.Fatalf("decoded request %+v does not encode: %v", req, err)
			}
			again, err := decodeRequest(b)
			if err != nil || again.ID != req.ID || again.Op != req.Op || !bytes.Equal(again.Args, req.Args) {
				t.Fatalf("request %+v came back as %+v, %v", req, again, err)
			}
		}
		if rep, err := decodeReply(msg); err == nil {
			b, err := encodeReply(rep)
			if err != nil {
				t.Fatalf("decoded reply %+v does not encode: %v", rep, err)
			}
			again, err := decodeReply(b)
			if err != nil || again.ID != rep.ID || again.Code != rep.Code || again.Err != rep.Err || !bytes.Equal(again.Result, rep.Result) {
				t.Fatalf("reply %+v came back as %+v, %v", rep, again, err)
			}
		}
	})
}
