package ztunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/agentmesh/agentmesh/ztunnel/hbone"
)

// closeWriter is a conn that can half-close (TCP, TLS, HBONE streams).
type closeWriter interface{ CloseWrite() error }

// join copies both ways between down (the side that opened the connection)
// and up until both directions ended, half-closing each side when its peer
// finished sending. It returns the bytes sent by down (toward up) and
// received by down, and the first real error. Both conns are closed on return.
func join(down, up net.Conn) (sent, received int64, err error) {
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		defer func() {
			// This goroutine is not the conn goroutine: recover here too.
			if r := recover(); r != nil {
				upErr = fmt.Errorf("panic copying upstream to client: %v", r)
				down.Close()
				up.Close()
			}
		}()
		received, upErr = pipe(down, up)
	})
	sent, err = pipe(up, down)
	wg.Wait()
	down.Close()
	up.Close()
	if err == nil {
		err = upErr
	}
	return sent, received, err
}

// pipe copies src to dst, then half-closes dst (or closes it when it cannot).
func pipe(dst, src net.Conn) (int64, error) {
	n, err := copyConn(dst, src)
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		src.Close()
		dst.Close()
		return n, err
	}
	return n, nil
}

// copyConn copies src to dst: TCP to TCP with io.Copy, which lets the kernel
// splice; anything with an HBONE stream on one side with hbone.Copy, whose
// buffer grows for bulk transfers (io.Copy would use 32 KiB, so 32 KiB
// HTTP/2 frames).
func copyConn(dst, src net.Conn) (int64, error) {
	_, tcpDst := dst.(*net.TCPConn)
	_, tcpSrc := src.(*net.TCPConn)
	if tcpDst && tcpSrc {
		return io.Copy(dst, src)
	}
	return hbone.Copy(dst, src, nil)
}
