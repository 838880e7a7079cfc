package hbone

import (
	"errors"
	"io"
	"sync"
)

// Copy buffer sizes. A connection copies through a small buffer and moves
// to a large one while reads keep filling the small one (bulk transfer),
// and back once they come in small again. Memory per copy direction: at
// most smallBuf + largeBuf while a bulk transfer runs, smallBuf while the
// connection is quiet after small reads; largeBuf is held across an idle
// period only when the read before it was large.
const (
	smallBuf = 32 << 10
	largeBuf = 256 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

// Copy copies src to dst until src ends (io.EOF is not an error) or either
// fails, with pooled buffers sized to the traffic (see smallBuf). On a
// write error it calls onWriteErr, if set, to unblock the other direction.
func Copy(dst io.Writer, src io.Reader, onWriteErr func()) (int64, error) {
	small := smallPool.Get().(*[]byte)
	defer smallPool.Put(small)
	var large *[]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	buf := *small
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				if onWriteErr != nil {
					onWriteErr()
				}
				return n, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
		switch {
		case nr == len(buf) && large == nil: // bulk: grow
			large = largePool.Get().(*[]byte)
			buf = *large
		case nr < smallBuf && large != nil: // quiet again: shrink
			largePool.Put(large)
			large, buf = nil, *small
		}
	}
}
