//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// Stream is one CONNECT a Server received: its Request, the answer, and,
// once accepted, the client's connection: Read is what the client sends,
// Write reaches the client at once.
//
// Half-close works both ways, as on a TCP connection: the client's end of
// stream is Read's io.EOF while what the upstream sends goes on, and
// CloseWrite ends the server's side (END_STREAM) while reading the client
// goes on. Close resets a stream that is still open.
//
// Its receive queue holds what the client sent and the handler has not
// read; nothing else is held per stream. Lock order: serverConn.mu before
// Stream.mu.
type Stream struct {
	Request
	sc     *serverConn
	id     uint32
	cancel context.CancelFunc // ends the handler's context
	status atomic.Int32       // the answer; 0 until answered

	sendWin int64 // guarded by sc.mu

	mu      sync.Mutex
	cond    sync.Cond // data queued, stream ended or failed
	queue   []*[]byte // received chunks (pooled), from queue[head]; guarded by mu
	head    int       // first unread chunk; guarded by mu
	off     int       // read offset into queue[head]; guarded by mu
	queued  int       // bytes in queue; guarded by mu
	recvWin int64     // what the client may still send before our next update; guarded by mu
	unacked int       // read and not yet returned to the client's stream window; guarded by mu
	recvEnd bool      // the client ended its side; guarded by mu
	sentEnd bool      // we ended ours; guarded by mu
	err     error     // the stream failed (reset, connection gone); guarded by mu
	closed  bool      // Close was called; guarded by mu
	push    pusher    // guarded by mu
	// readDeadline ends a Read waiting past it (os.ErrDeadlineExceeded);
	// readTimer wakes the waiting Read then. Guarded by mu.
	readDeadline time.Time
	readTimer    *time.Timer
	closeOnce    sync.Once
}

// PushTo makes the connection's reader write what the client sends
// straight to rc while nothing is queued ahead (relay.Pusher); stop ends
// that and returns the bytes written so.
func (s *Stream) PushTo(rc syscall.RawConn) (stop func() int64) {
	s.mu.Lock()
	s.push.start(rc)
	s.mu.Unlock()
	return func() int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.push.stop()
	}
}

// Accept answers 200: the tunnel is up.
func (s *Stream) Accept() error {
	if !s.status.CompareAndSwap(0, http.StatusOK) {
		return errors.New("hbone stream answered already")
	}
	if err := s.answerErr(); err != nil {
		return fmt.Errorf("hbone accept: %w", err)
	}
	if err := s.sc.writeHeaders(s.id, http.StatusOK, nil, false); err != nil {
		return fmt.Errorf("hbone accept: %w", err)
	}
	return nil
}

// Refuse answers the request with the status err calls for (see
// StatusFor) and its status text, and ends the server's side of the
// stream. It returns the status.
func (s *Stream) Refuse(err error) int {
	code := StatusFor(err)
	if !s.status.CompareAndSwap(0, int32(code)) {
		return int(s.status.Load())
	}
	if s.answerErr() != nil {
		return code // reset or gone: nobody to tell
	}
	header, body := refusal(code)
	if s.sc.writeHeaders(s.id, code, header, false) != nil {
		return code
	}
	if _, err := s.sc.writeData(s, body, true); err == nil {
		s.endSent()
	}
	return code
}

// answerErr is why the stream can take no answer, nil if it can.
func (s *Stream) answerErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errWriteSideClosed
	}
	return s.err
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

// deliver queues chunk (a pooled chunk, nil for none), which the stream
// takes, and, with end, ends the receive side; length is the frame's
// flow-controlled length, padding included. It returns false when the
// stream takes no more data (the caller gives the window and the chunk
// back), with a http2.StreamError when that is the client's fault.
func (s *Stream) deliver(chunk *[]byte, length int, end bool) (bool, error) {
	s.mu.Lock()
	switch {
	case s.err != nil || s.closed:
		s.mu.Unlock()
		return false, nil
	case s.recvEnd:
		s.mu.Unlock()
		return false, http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed, Cause: errDataAfterEnd}
	case int64(length) > s.recvWin:
		s.mu.Unlock()
		return false, http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl, Cause: errStreamOverrun}
	}
	s.recvWin -= int64(length)
	s.unacked += length // padding goes back with the next update; the data once read
	pushed := 0
	if chunk != nil {
		s.unacked -= len(*chunk)
		if s.push.ready(s.queued) {
			pushed = s.push.push(*chunk)
		}
		if pushed == len(*chunk) {
			putChunk(chunk)
		} else {
			if s.head > 0 && len(s.queue) == cap(s.queue) {
				// Full, with read chunks in front: move the unread ones
				// down rather than grow.
				n := copy(s.queue, s.queue[s.head:])
				clear(s.queue[n:])
				s.queue, s.head = s.queue[:n], 0
			}
			if pushed > 0 {
				s.off = pushed // the queue was empty: this is its head
			}
			s.queue = append(s.queue, chunk)
			s.queued += len(*chunk) - pushed
		}
	}
	// Pushed bytes count as read: they go back to the client's windows.
	var streamUpdate int
	if pushed > 0 {
		s.unacked += pushed
		if s.unacked >= streamWindow/4 && !s.recvEnd && !end {
			streamUpdate, s.unacked = s.unacked, 0
			s.recvWin += int64(streamUpdate)
		}
	}
	if end {
		s.recvEnd = true
	}
	done := s.recvEnd && s.sentEnd
	if s.queued > 0 || end {
		// Only then: a relay waiting for data while it is pushed stays
		// asleep.
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	if done {
		s.sc.forget(s)
	}
	if streamUpdate > 0 {
		if err := s.sc.queueWindowUpdate(s.id, uint32(streamUpdate)); err != nil {
			return true, err
		}
	}
	if pushed > 0 {
		if u := s.sc.consumed(pushed); u > 0 {
			return true, s.sc.queueWindowUpdate(0, u)
		}
	}
	return true, nil
}

// fail ends the stream with err (reset by the client, connection gone):
// reads and writes fail, the handler's context ends.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.cancel()
	s.sc.wakeWriters()
}

// readableLocked reports whether a Read would not block.
func (s *Stream) readableLocked() bool {
	return s.queued > 0 || s.recvEnd || s.closed || s.err != nil
}

// Read reads what the client sends. It returns io.EOF once the client
// ended its side and everything was read.
func (s *Stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	s.push.inFlight = false // a relay reading again wrote what it read before
	for !s.readableLocked() {
		if !s.readDeadline.IsZero() && !time.Now().Before(s.readDeadline) {
			s.mu.Unlock()
			// As it is: net/http tells an aborted read by its net.Error.
			return 0, os.ErrDeadlineExceeded
		}
		s.cond.Wait()
	}
	switch {
	case s.closed:
		s.mu.Unlock()
		return 0, fmt.Errorf("hbone stream read: %w", net.ErrClosed)
	case s.queued == 0 && s.recvEnd:
		s.mu.Unlock()
		return 0, io.EOF
	case s.queued == 0:
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	n := 0
	for n < len(p) && s.head < len(s.queue) {
		c := s.queue[s.head]
		k := copy(p[n:], (*c)[s.off:])
		n += k
		s.off += k
		if s.off == len(*c) {
			putChunk(c)
			s.queue[s.head] = nil
			s.head++
			s.off = 0
		}
	}
	if s.head == len(s.queue) {
		// Keep a backing array that holds a window of full frames for the
		// next chunks; drop a larger one (a burst of small frames).
		s.queue, s.head = s.queue[:0], 0
		if cap(s.queue) > 2*streamWindow/maxFrame {
			s.queue = nil
		}
	}
	s.queued -= n
	s.unacked += n
	s.push.inFlight = n > 0
	var streamUpdate int
	if s.unacked >= streamWindow/4 && !s.recvEnd {
		streamUpdate, s.unacked = s.unacked, 0
		s.recvWin += int64(streamUpdate)
	}
	s.mu.Unlock()
	if streamUpdate > 0 {
		s.sc.writeWindowUpdate(s.id, uint32(streamUpdate))
	}
	if u := s.sc.consumed(n); u > 0 {
		s.sc.writeWindowUpdate(0, u)
	}
	return n, nil
}

// WaitReadable returns once a Read would not block: data is queued, the
// client ended its side, or the stream failed or was closed. The relay
// waits here so that a quiet stream holds no read buffer.
func (s *Stream) WaitReadable() error {
	s.mu.Lock()
	s.push.inFlight = false // the relay wrote what it read before
	for !s.readableLocked() {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return nil
}

// Write sends p to the client. Before Accept, after CloseWrite, Close or
// the client resetting the stream it fails (after CloseWrite and Close
// with an error wrapping net.ErrClosed).
func (s *Stream) Write(p []byte) (int, error) {
	if s.Status() != http.StatusOK {
		return 0, errors.New("hbone stream write: not accepted")
	}
	return s.sc.writeData(s, p, false)
}

// writeErr is why s can no longer send, nil if it can.
func (s *Stream) writeErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.sentEnd:
		return errWriteSideClosed
	case s.err != nil:
		if errors.Is(s.err, net.ErrClosed) {
			return s.err
		}
		return fmt.Errorf("%w: %w", errWriteSideClosed, s.err)
	}
	return nil
}

// CloseWrite ends the server's side of the stream (END_STREAM): the client
// reads EOF, and reading what it still sends goes on.
func (s *Stream) CloseWrite() error {
	if s.writeErr() != nil {
		return nil // already ended, one way or another
	}
	if s.Status() == 0 {
		return errors.New("hbone stream close write: not answered")
	}
	if _, err := s.sc.writeData(s, nil, true); err != nil {
		return err
	}
	s.endSent()
	return nil
}

// endSent records that END_STREAM went out; a stream ended both ways is
// done.
func (s *Stream) endSent() {
	s.mu.Lock()
	s.sentEnd = true
	done := s.recvEnd
	s.mu.Unlock()
	s.sc.wakeWriters()
	if done {
		s.sc.forget(s)
	}
}

// Close resets the stream if it is still open and drops what was not
// read. A stream whose server side ended already is reset with NO_ERROR
// ("stop sending", RFC 9113 section 8.1), any other with CANCEL.
func (s *Stream) Close() error {
	s.abort(0)
	return nil
}

// abort closes the stream, resetting it with code if it is still open
// (0: as Close does).
func (s *Stream) abort(code http2.ErrCode) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		open := s.err == nil && !(s.recvEnd && s.sentEnd)
		if code == 0 {
			code = http2.ErrCodeCancel
			if s.sentEnd {
				code = http2.ErrCodeNo
			}
		}
		for _, c := range s.queue[s.head:] {
			putChunk(c)
		}
		unread := s.queued
		s.queue, s.head, s.off, s.queued = nil, 0, 0, 0
		s.cond.Broadcast()
		s.mu.Unlock()
		s.sc.forget(s)
		if open {
			s.sc.writeRST(s.id, code)
		}
		if u := s.sc.consumed(unread); u > 0 {
			s.sc.writeWindowUpdate(0, u)
		}
		s.sc.wakeWriters()
	})
}

func (s *Stream) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(s.Request.LocalAddr) }
func (s *Stream) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(s.PeerAddr) }

func (s *Stream) SetDeadline(t time.Time) error      { return zeroDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return zeroDeadline(t) }

// SetReadDeadline makes a Read waiting at or past t return
// os.ErrDeadlineExceeded (what is queued is still read); the zero time
// clears it. net/http's server needs it to take over a connection
// (Hijack, for an upgrade) while its background read waits.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readDeadline = t
	if s.readTimer != nil {
		s.readTimer.Stop()
		s.readTimer = nil
	}
	if d := time.Until(t); !t.IsZero() && d > 0 {
		s.readTimer = time.AfterFunc(d, func() {
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
	}
	s.cond.Broadcast()
	return nil
}
