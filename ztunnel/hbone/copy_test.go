package hbone

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// sizedReader returns reads of the given sizes (capped by the buffer) and
// records how big a buffer each read was offered.
type sizedReader struct {
	sizes   []int
	offered []int
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	r.offered = append(r.offered, len(p))
	n := min(r.sizes[0], len(p))
	r.sizes = r.sizes[1:]
	for i := range n {
		p[i] = byte(i)
	}
	return n, nil
}

func TestCopyGrowsForBulkAndShrinksWhenQuiet(t *testing.T) {
	r := &sizedReader{sizes: []int{100, smallBuf, largeBuf, largeBuf, 5000, 100}}
	var dst bytes.Buffer
	n, err := Copy(&dst, r, nil)
	if err != nil || n != int64(dst.Len()) || n != 100+smallBuf+2*largeBuf+5000+100 {
		t.Fatalf("copied %d (%d in dst), %v", n, dst.Len(), err)
	}
	want := []int{smallBuf, smallBuf, largeBuf, largeBuf, largeBuf, smallBuf}
	if !slices.Equal(r.offered, want) {
		t.Errorf("buffers offered %v, want %v", r.offered, want)
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errors.New("boom") }

func TestCopyWriteErrorCallsBack(t *testing.T) {
	called := false
	_, err := Copy(failWriter{}, &sizedReader{sizes: []int{10}}, func() { called = true })
	if err == nil || !called {
		t.Errorf("err %v, callback %v; want the write error and the callback", err, called)
	}
}
