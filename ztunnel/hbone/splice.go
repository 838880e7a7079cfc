package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// splice copies between a CONNECT stream and its upstream until the upstream
// ends its side (or either side fails). The client's end of stream becomes
// a half-close of the upstream. It returns the bytes copied each way and the
// first error that was not a normal end.
func splice(ctx context.Context, w http.ResponseWriter, body io.ReadCloser, up net.Conn) (in, out int64, err error) {
	stop := context.AfterFunc(ctx, func() { up.Close() }) // stream reset or connection gone
	defer stop()
	inErr := make(chan error, 1)
	go func() {
		n, err := relay.Copy(up, body)
		in = n
		if err == nil {
			err = closeWrite(up)
		} else {
			up.Close() // unblock the other direction
		}
		inErr <- err
	}()
	out, outErr := relay.Copy(newFlushWriter(w), up)
	if outErr != nil {
		body.Close() // unblock the other direction
	}
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

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// flushWriter sends every write to the client at once. The relay reads all
// the upstream has (up to its buffer) before it writes, so there is nothing to
// gain by holding a write back. Writes larger than x/net's 4 KiB response
// buffer bypass it, and then the flush is free.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newFlushWriter(w http.ResponseWriter) flushWriter {
	return flushWriter{w: w, rc: http.NewResponseController(w)}
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
