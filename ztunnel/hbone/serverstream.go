package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// Stream is one CONNECT a Server received: its Request, the answer, and,
// once accepted, the client's connection: Read is what the client sends,
// Write reaches the client at once, CloseWrite ends the answer.
//
// Half-close: the client's end of stream is Read's io.EOF, and what the
// upstream still sends goes on. The server cannot end a response while it
// keeps reading the request (x/net/http2), so CloseWrite also stops
// reading the client: Read returns io.EOF from then on and what the client
// still sends is dropped.
type Stream struct {
	Request
	w    http.ResponseWriter
	rc   *http.ResponseController
	body io.ReadCloser

	status     atomic.Int32 // the answer; 0 until answered
	closeRead  sync.Once
	readClosed atomic.Bool // CloseWrite or Close stopped reading the client
}

// Accept answers 200: the tunnel is up.
func (s *Stream) Accept() error {
	if !s.status.CompareAndSwap(0, http.StatusOK) {
		return errors.New("hbone stream answered already")
	}
	s.w.WriteHeader(http.StatusOK)
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("hbone accept: %w", err)
	}
	return nil
}

// Refuse answers the request with the status err calls for (see
// StatusFor) and its status text. It returns the status.
func (s *Stream) Refuse(err error) int {
	code := StatusFor(err)
	if !s.status.CompareAndSwap(0, int32(code)) {
		return int(s.status.Load())
	}
	if code == http.StatusMethodNotAllowed {
		s.w.Header().Set("Allow", http.MethodConnect)
	}
	http.Error(s.w, http.StatusText(code), code)
	return code
}

// Status is the answer sent, 0 before one.
func (s *Stream) Status() int { return int(s.status.Load()) }

// StatusFor is the answer to a refusal: 401 for an error wrapping
// ErrDenied (policy), 405 for ErrNotConnect, 400 for ErrBadAuthority, 503
// for anything else (the upstream failed).
func StatusFor(err error) int {
	switch {
	case errors.Is(err, ErrDenied):
		return http.StatusUnauthorized
	case errors.Is(err, ErrNotConnect):
		return http.StatusMethodNotAllowed
	case errors.Is(err, ErrBadAuthority):
		return http.StatusBadRequest
	}
	return http.StatusServiceUnavailable
}

// Read reads what the client sends; io.EOF once it ended its side or
// CloseWrite stopped reading.
func (s *Stream) Read(p []byte) (int, error) {
	if s.readClosed.Load() {
		return 0, io.EOF
	}
	n, err := s.body.Read(p)
	if err != nil && s.readClosed.Load() {
		err = io.EOF // we stopped reading; not the client's failure
	}
	return n, err
}

// Write sends p to the client at once (the relay reads what it has before
// it writes, so nothing is gained by holding a write back).
func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

// CloseWrite ends the answer as far as the stream can: it stops reading
// the client, so the copy from the client ends and the handler returns,
// which sends END_STREAM.
func (s *Stream) CloseWrite() error {
	s.stopReading()
	return nil
}

// Close stops reading the client; the stream ends when the handler returns.
func (s *Stream) Close() error {
	s.stopReading()
	return nil
}

func (s *Stream) stopReading() {
	s.closeRead.Do(func() {
		s.readClosed.Store(true)
		s.body.Close()
	})
}

func (s *Stream) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(s.Request.LocalAddr) }
func (s *Stream) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(s.PeerAddr) }

func (s *Stream) SetDeadline(t time.Time) error      { return zeroDeadline(t) }
func (s *Stream) SetReadDeadline(t time.Time) error  { return zeroDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return zeroDeadline(t) }

// serveStream hands one request on a connection to the handler.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, c *connState) {
	if !c.enter() {
		return
	}
	defer c.active.Done()
	st := &Stream{
		Request: Request{PeerID: c.peer, PeerAddr: c.remote, LocalAddr: c.local, Header: r.Header},
		w:       w, rc: http.NewResponseController(w), body: r.Body,
	}
	switch auth, err := ParseAuthority(r.Host); {
	case r.Method != http.MethodConnect:
		st.Invalid = fmt.Errorf("%w: %s", ErrNotConnect, r.Method)
	case err != nil:
		st.Invalid = fmt.Errorf("%w: %w", ErrBadAuthority, err)
	default:
		st.Authority = auth
	}
	c.h(r.Context(), st)
	st.stopReading()
	if st.Status() == 0 { // a handler that forgot: the client must not hang
		st.Refuse(errors.New("not answered"))
	}
}

// connState is what the streams of one connection share.
type connState struct {
	peer          spiffe.ID
	remote, local netip.AddrPort
	h             Handle

	mu      sync.Mutex
	done    bool           // no new streams; guarded by mu
	streams int            // streams ever entered; guarded by mu
	active  sync.WaitGroup // stream handlers; Add only under mu while !done
}

// enter registers a stream handler; false once the connection is done.
func (c *connState) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	c.streams++
	c.active.Add(1)
	return true
}

// closeAndWait stops new streams, waits for the running ones and returns
// how many the connection carried.
func (c *connState) closeAndWait() int {
	c.mu.Lock()
	c.done = true
	n := c.streams
	c.mu.Unlock()
	c.active.Wait()
	return n
}
