package cstp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1400, MaxPayload} {
		payload := bytes.Repeat([]byte{0xab}, n)
		wire := AppendFrame(nil, Data, payload)
		buf := make([]byte, HeaderLen+MaxPayload)
		typ, got, err := ReadFrame(bytes.NewReader(wire), &buf)
		if err != nil || typ != Data || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: ReadFrame = %d, %d bytes, %v", n, typ, len(got), err)
		}
	}
}

func TestHeaderBytes(t *testing.T) {
	want := []byte{'S', 'T', 'F', 1, 0, 3, 4, 0, 1, 2, 3}
	if got := AppendFrame(nil, DPDResp, []byte{1, 2, 3}); !bytes.Equal(got, want) {
		t.Fatalf("frame = % x, want % x", got, want)
	}
}

func TestBadFrames(t *testing.T) {
	buf := make([]byte, HeaderLen+MaxPayload)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad magic", []byte{'S', 'T', 'G', 1, 0, 0, 0, 0}, ErrBadMagic},
		{"bad version", []byte{'S', 'T', 'F', 2, 0, 0, 0, 0}, ErrBadMagic},
		{"byte 7 set", []byte{'S', 'T', 'F', 1, 0, 0, 0, 1}, ErrBadMagic},
		{"oversized length", []byte{'S', 'T', 'F', 1, 0xff, 0xff, 0, 0}, ErrFrameTooLong},
		{"truncated payload", []byte{'S', 'T', 'F', 1, 0, 10, 0, 0, 1, 2}, io.ErrUnexpectedEOF},
		{"truncated header", []byte{'S', 'T', 'F'}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadFrame(bytes.NewReader(tc.in), &buf)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{'S', 'T', 'F', 1, 0, 2, 0, 0, 0x45, 0})
	f.Add([]byte{'S', 'T', 'F', 1, 0xff, 0xff, 0, 0})
	buf := make([]byte, HeaderLen+MaxPayload)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			if _, _, err := ReadFrame(r, &buf); err != nil {
				return
			}
		}
	})
}

// A reader's buffer starts small and grows once for a frame larger than an MTU.
func TestReadFrameGrows(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 5000)
	wire := AppendFrame(nil, Data, big)
	buf := make([]byte, HeaderLen+100)
	typ, got, err := ReadFrame(bytes.NewReader(wire), &buf)
	if err != nil || typ != Data || !bytes.Equal(got, big) || len(buf) < HeaderLen+5000 {
		t.Fatalf("typ %d, %d bytes, err %v, buffer %d", typ, len(got), err, len(buf))
	}
}

// Reading a frame allocates nothing in steady state.
func TestReadFrameAllocs(t *testing.T) {
	wire := AppendFrame(nil, Data, bytes.Repeat([]byte{0x45}, 1400))
	buf := make([]byte, HeaderLen+MaxPayload)
	r := bytes.NewReader(wire)
	if n := testing.AllocsPerRun(1000, func() {
		r.Reset(wire)
		if _, _, err := ReadFrame(r, &buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ReadFrame: %v allocations per frame", n)
	}
}
