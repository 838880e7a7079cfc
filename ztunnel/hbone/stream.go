package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxErrorBody bounds how much of a non-200 answer's body is read.
const maxErrorBody = 512

// openStream sends the CONNECT on pc and waits for the answer or ctx. The
// stream outlives ctx: it ends with Close or with the Client.
func (c *Client) openStream(ctx context.Context, pc *pconn, t *Target) (*stream, error) {
	sctx, cancel := context.WithCancel(c.ctx)
	stop := context.AfterFunc(ctx, cancel) // ctx only bounds the wait for the answer
	auth := t.Authority.String()
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: auth},
		Host:          auth,
		Header:        requestHeader(t.Header),
		Body:          pr,
		ContentLength: -1,
	}).WithContext(sctx)
	resp, err := pc.cc.RoundTrip(req)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = statusError(resp)
	}
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		pw.CloseWithError(errStreamClosed)
		return nil, fmt.Errorf("hbone connect %s via %s: %w", auth, t.HBONEAddr, err)
	}
	return &stream{
		body: resp.Body, pw: pw, cancel: cancel,
		local: pc.tc.LocalAddr(), remote: net.TCPAddrFromAddrPort(t.Authority),
		release: func() { c.release(pc) },
	}, nil
}

func statusError(resp *http.Response) *StatusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &StatusError{Code: resp.StatusCode, Message: msg}
}

// stream is a CONNECT stream as a net.Conn. Deadlines are not supported.
type stream struct {
	body    io.ReadCloser  // the response: bytes from the upstream
	pw      *io.PipeWriter // the request body: bytes to the upstream
	cancel  context.CancelFunc
	local   net.Addr
	remote  net.Addr // the authority
	release func()
	once    sync.Once
}

// ErrDeadline is returned by the deadline setters of a stream.
var ErrDeadline = fmt.Errorf("hbone stream deadlines: %w", errors.ErrUnsupported)

func (s *stream) Read(p []byte) (int, error) { return s.body.Read(p) }

// Write sends p to the upstream. After CloseWrite, Close or the server
// ending the stream it fails with an error wrapping net.ErrClosed.
func (s *stream) Write(p []byte) (int, error) {
	n, err := s.pw.Write(p)
	if errors.Is(err, io.ErrClosedPipe) {
		err = fmt.Errorf("hbone stream write side closed: %w", net.ErrClosed)
	}
	return n, err
}

// CloseWrite ends the stream's sending side (HTTP/2 END_STREAM); the
// upstream sees a TCP half-close and reading goes on.
func (s *stream) CloseWrite() error { return s.pw.Close() }

// Close resets the stream if it is still open and frees its pool slot.
func (s *stream) Close() error {
	s.once.Do(func() {
		s.pw.CloseWithError(net.ErrClosed)
		s.body.Close()
		s.cancel()
		s.release()
	})
	return nil
}

func (s *stream) LocalAddr() net.Addr  { return s.local }
func (s *stream) RemoteAddr() net.Addr { return s.remote }

func (s *stream) SetDeadline(t time.Time) error      { return zeroDeadline(t) }
func (s *stream) SetReadDeadline(t time.Time) error  { return zeroDeadline(t) }
func (s *stream) SetWriteDeadline(t time.Time) error { return zeroDeadline(t) }

// zeroDeadline accepts clearing a deadline, the only thing a stream can do.
func zeroDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return ErrDeadline
}
