package bench

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, size := range []int{MinFrame, 9, 1024, MaxFrame} {
		p := make([]byte, size)
		fillPayload(p, 0xdeadbeef01)
		var b bytes.Buffer
		if err := writeFrame(&b, p); err != nil {
			t.Fatalf("writeFrame(%d): %v", size, err)
		}
		if b.Len() != 4+size {
			t.Fatalf("frame of %d-byte payload is %d bytes, want %d", size, b.Len(), 4+size)
		}
		got, err := readFrame(&b, nil)
		if err != nil {
			t.Fatalf("readFrame(%d): %v", size, err)
		}
		if seq, ok := checkPayload(got); !ok || seq != 0xdeadbeef01 {
			t.Errorf("size %d: checkPayload = %#x, %v; want 0xdeadbeef01, true", size, seq, ok)
		}
	}
}

func TestPutFrameMatchesWriteFrame(t *testing.T) {
	frame := make([]byte, 4+300)
	putFrame(frame, 42)
	p := make([]byte, 300)
	fillPayload(p, 42)
	var b bytes.Buffer
	if err := writeFrame(&b, p); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(frame, b.Bytes()) {
		t.Error("putFrame and writeFrame disagree")
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"clean eof", nil, io.EOF},
		{"short header", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"short body", []byte{0, 0, 0, 5, 1, 2}, io.ErrUnexpectedEOF},
		{"too large", []byte{0, 0x10, 0, 1}, errFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readFrame(bytes.NewReader(tt.in), nil)
			if !errors.Is(err, tt.want) {
				t.Errorf("readFrame = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCheckPayloadCatchesCorruption(t *testing.T) {
	p := make([]byte, 64)
	fillPayload(p, 7)
	p[40] ^= 1
	if _, ok := checkPayload(p); ok {
		t.Error("checkPayload accepted a flipped bit")
	}
	if _, ok := checkPayload(p[:MinFrame-1]); ok {
		t.Error("checkPayload accepted a payload shorter than the sequence number")
	}
}

func TestCountRoundTripAndLimit(t *testing.T) {
	var b bytes.Buffer
	if err := writeCount(&b, 256<<20); err != nil {
		t.Fatal(err)
	}
	if n, err := readCount(&b); err != nil || n != 256<<20 {
		t.Errorf("readCount = %d, %v; want %d, nil", n, err, 256<<20)
	}
	b.Reset()
	if err := writeCount(&b, MaxBulk+1); err != nil {
		t.Fatal(err)
	}
	if _, err := readCount(&b); err == nil {
		t.Error("readCount accepted a count over MaxBulk")
	}
}

// FuzzReadFrame feeds arbitrary network bytes to the echo framing: it must
// never panic or return more than MaxFrame bytes, and whatever it accepts
// must encode back to the bytes it consumed.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		p, err := readFrame(r, nil)
		if err != nil {
			return
		}
		if len(p) > MaxFrame {
			t.Fatalf("accepted %d bytes", len(p))
		}
		var b bytes.Buffer
		if err := writeFrame(&b, p); err != nil {
			t.Fatal(err)
		}
		consumed := len(in) - r.Len()
		if !bytes.Equal(b.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoded %x, consumed %x", b.Bytes(), in[:consumed])
		}
	})
}

// FuzzReadCount checks the bulk header parser the same way.
func FuzzReadCount(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0x10, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := readCount(bytes.NewReader(in))
		if err != nil {
			return
		}
		if n < 0 || n > MaxBulk {
			t.Fatalf("accepted count %d", n)
		}
	})
}
