package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// bufSize is the copy buffer per direction; HTTP/2 flow control bounds the rest.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// splice copies between a CONNECT stream and its upstream until the upstream
// ends its side (or either side fails). The client's end of stream becomes
// a half-close of the upstream. It returns the bytes copied each way and the
// first error that was not a normal end.
func splice(ctx context.Context, w http.ResponseWriter, body io.ReadCloser, up net.Conn) (in, out int64, err error) {
	stop := context.AfterFunc(ctx, func() { up.Close() }) // stream reset or connection gone
	defer stop()
	inErr := make(chan error, 1)
	go func() {
		n, err := copyBuf(up, body, nil)
		in = n
		if err == nil {
			err = closeWrite(up)
		} else {
			up.Close() // unblock the other direction
		}
		inErr <- err
	}()
	out, outErr := copyBuf(flushWriter{w}, up, func() { body.Close() })
	var ie error
	select {
	case ie = <-inErr:
	default:
		// The upstream is done first: stop reading the client.
		body.Close()
		<-inErr
	}
	return in, out, errors.Join(outErr, ie)
}

// copyBuf copies src to dst with a pooled buffer. On a write error it calls
// onWriteErr (to unblock the other direction). io.EOF is not an error.
func copyBuf(dst io.Writer, src io.Reader, onWriteErr func()) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				if onWriteErr != nil {
					onWriteErr()
				}
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// flushWriter sends every write to the client at once.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = http.NewResponseController(f.w).Flush()
	}
	return n, err
}
