package protocol

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestCSTPFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1400, maxCSTPPayload} {
		payload := bytes.Repeat([]byte{0xab}, n)
		f := newFrame(pktData, payload)
		buf := make([]byte, cstpHeaderLen+maxCSTPPayload)
		typ, got, err := readCSTPFrame(bytes.NewReader(f.b[:f.n]), buf)
		if err != nil || typ != pktData || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: readCSTPFrame = %d, %d bytes, %v", n, typ, len(got), err)
		}
		f.release()
	}
}

func TestCSTPHeaderBytes(t *testing.T) {
	f := newFrame(pktDPDResp, []byte{1, 2, 3})
	want := []byte{'S', 'T', 'F', 1, 0, 3, 4, 0, 1, 2, 3}
	if !bytes.Equal(f.b[:f.n], want) {
		t.Fatalf("frame = % x, want % x", f.b[:f.n], want)
	}
}

func TestCSTPBadFrames(t *testing.T) {
	buf := make([]byte, cstpHeaderLen+maxCSTPPayload)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad magic", []byte{'S', 'T', 'G', 1, 0, 0, 0, 0}, errBadMagic},
		{"bad version", []byte{'S', 'T', 'F', 2, 0, 0, 0, 0}, errBadMagic},
		{"byte 7 set", []byte{'S', 'T', 'F', 1, 0, 0, 0, 1}, errBadMagic},
		{"oversized length", []byte{'S', 'T', 'F', 1, 0xff, 0xff, 0, 0}, errFrameTooLong},
		{"truncated payload", []byte{'S', 'T', 'F', 1, 0, 10, 0, 0, 1, 2}, io.ErrUnexpectedEOF},
		{"truncated header", []byte{'S', 'T', 'F'}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		_, _, err := readCSTPFrame(bytes.NewReader(tc.in), buf)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func FuzzReadCSTPFrame(f *testing.F) {
	f.Add([]byte{'S', 'T', 'F', 1, 0, 2, 0, 0, 0x45, 0})
	f.Add([]byte{'S', 'T', 'F', 1, 0xff, 0xff, 0, 0})
	buf := make([]byte, cstpHeaderLen+maxCSTPPayload)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			if _, _, err := readCSTPFrame(r, buf); err != nil {
				return
			}
		}
	})
}

// A tunnel's read buffer starts small and grows once for a frame larger than an MTU.
func TestReadCSTPFrameGrows(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 5000)
	f := newFrame(pktData, big)
	wire := bytes.Clone(f.b[:f.n])
	f.release()
	buf := make([]byte, cstpHeaderLen+100)
	typ, got, err := readCSTPFrameInto(bytes.NewReader(wire), &buf)
	if err != nil || typ != pktData || !bytes.Equal(got, big) || len(buf) < cstpHeaderLen+5000 {
		t.Fatalf("typ %d, %d bytes, err %v, buffer %d", typ, len(got), err, len(buf))
	}
}
