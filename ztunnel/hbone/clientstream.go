//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// clientStream is one CONNECT stream as a net.Conn. Its receive queue
// holds what the server sent and the app has not read; nothing else is
// held per stream. Lock order: clientConn.mu before clientStream.mu.
type clientStream struct {
	cc       *clientConn
	id       uint32
	answered chan struct{} // closed once the answer (or a failure) came
	status   int           // the answer's :status; set before answered closes
	// answerErr is why no answer came; set before answered closes.
	answerErr error

	sendWin int64 // guarded by cc.mu

	mu         sync.Mutex
	cond       sync.Cond // data queued, stream ended or failed
	queue      []*[]byte // received chunks (pooled); guarded by mu
	off        int       // read offset into queue[0]; guarded by mu
	queued     int       // bytes in queue; guarded by mu
	recvEnd    bool      // the server ended its side; guarded by mu
	sentEnd    bool      // we ended ours; guarded by mu
	err        error     // the stream failed (reset, connection gone); guarded by mu
	closed     bool      // Close was called; guarded by mu
	unacked    int       // read and not yet returned to the server's window; guarded by mu
	push       pusher    // guarded by mu
	answerOnce sync.Once

	local, remote net.Addr
	release       func() // gives the pool slot back; called once by Close
	closeOnce     sync.Once
}

func newClientStream(cc *clientConn, id uint32, sendWin int64) *clientStream {
	s := &clientStream{cc: cc, id: id, sendWin: sendWin, answered: make(chan struct{})}
	s.cond.L = &s.mu
	return s
}

// answer records the server's answer, or why there is none.
func (s *clientStream) answer(status int, err error) {
	s.answerOnce.Do(func() {
		s.status, s.answerErr = status, err
		close(s.answered)
	})
}

// deliver queues data (copied into a pooled chunk) and, with end, ends the
// receive side. false when the stream takes no more data (it failed, was
// closed, or exceeds its window: then it is reset).
func (s *clientStream) deliver(data []byte, end bool) bool {
	s.mu.Lock()
	if s.err != nil || s.closed || s.recvEnd {
		s.mu.Unlock()
		return false
	}
	if s.queued+len(data) > streamWindow {
		s.mu.Unlock()
		s.cc.resetStream(s.id, http2.ErrCodeFlowControl, errors.New("server overran the stream window"))
		return false
	}
	pushed := 0
	if len(data) > 0 {
		if s.push.ready(s.queued) {
			pushed = s.push.push(data)
		}
		if pushed < len(data) {
			s.queue = append(s.queue, chunkOf(data[pushed:]))
			s.queued += len(data) - pushed
		}
	}
	// Pushed bytes count as read: they go back to the server's windows.
	var streamUpdate int
	if pushed > 0 {
		s.unacked += pushed
		if s.unacked >= streamWindow/4 && !s.recvEnd && !end {
			streamUpdate, s.unacked = s.unacked, 0
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
		s.cc.forget(s)
	}
	if streamUpdate > 0 {
		s.cc.writeWindowUpdate(s.id, uint32(streamUpdate))
	}
	if pushed > 0 {
		if u := s.cc.consumed(pushed); u > 0 {
			s.cc.writeWindowUpdate(0, u)
		}
	}
	return true
}

// PushTo makes the connection's reader write what the server sends
// straight to rc while nothing is queued ahead (relay.Pusher); stop ends
// that and returns the bytes written so.
func (s *clientStream) PushTo(rc syscall.RawConn) (stop func() int64) {
	s.mu.Lock()
	s.push.start(rc)
	s.mu.Unlock()
	return func() int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.push.stop()
	}
}

// fail ends the stream with err (reset by the server, connection gone).
func (s *clientStream) fail(err error) {
	s.answer(0, err)
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	// Writers wait on the connection's window condition.
	s.cc.mu.Lock()
	s.cc.cond.Broadcast()
	s.cc.mu.Unlock()
}

// reset handles the server's RST_STREAM. NO_ERROR after the server ended
// its side only means "stop sending": what was received stays readable.
func (s *clientStream) reset(code http2.ErrCode) {
	s.cc.forget(s)
	s.mu.Lock()
	graceful := code == http2.ErrCodeNo && s.recvEnd
	s.mu.Unlock()
	if graceful {
		s.mu.Lock()
		s.sentEnd = true
		if s.err == nil {
			s.err = errWriteSideClosed
		}
		s.mu.Unlock()
		s.cc.mu.Lock()
		s.cc.cond.Broadcast()
		s.cc.mu.Unlock()
		return
	}
	err := error(streamError{code})
	if code == http2.ErrCodeRefusedStream {
		err = fmt.Errorf("%w: %w", errUnprocessed, err)
	}
	s.fail(err)
}

// errWriteSideClosed is returned by writes after the server stopped
// taking data.
var errWriteSideClosed = fmt.Errorf("hbone stream write side closed: %w", net.ErrClosed)

// Read reads what the server sent. It returns io.EOF once the server ended
// its side and everything was read.
func (s *clientStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	s.push.inFlight = false // a relay reading again wrote what it read before
	for s.queued == 0 && !s.recvEnd && !s.closed && (s.err == nil || s.err == errWriteSideClosed) {
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
	for n < len(p) && len(s.queue) > 0 {
		c := copy(p[n:], (*s.queue[0])[s.off:])
		n += c
		s.off += c
		if s.off == len(*s.queue[0]) {
			putChunk(s.queue[0])
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.off = 0
		}
	}
	if len(s.queue) == 0 {
		s.queue = nil // drop the backing array with the last chunk
	}
	s.queued -= n
	s.unacked += n
	s.push.inFlight = n > 0
	var streamUpdate int
	if s.unacked >= streamWindow/4 && !s.recvEnd {
		streamUpdate, s.unacked = s.unacked, 0
	}
	s.mu.Unlock()
	if streamUpdate > 0 {
		s.cc.writeWindowUpdate(s.id, uint32(streamUpdate))
	}
	if u := s.cc.consumed(n); u > 0 {
		s.cc.writeWindowUpdate(0, u)
	}
	return n, nil
}

// WaitReadable returns once a Read would not block: data is queued, the
// server ended its side, or the stream failed or was closed. The relay
// waits here so that a quiet stream holds no read buffer.
func (s *clientStream) WaitReadable() error {
	s.mu.Lock()
	s.push.inFlight = false // the relay wrote what it read before
	for s.queued == 0 && !s.recvEnd && !s.closed && (s.err == nil || s.err == errWriteSideClosed) {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return nil
}

// Write sends p to the upstream. After CloseWrite, Close or the server
// ending the stream it fails with an error wrapping net.ErrClosed.
func (s *clientStream) Write(p []byte) (int, error) {
	return s.cc.writeData(s, p, false)
}

// writeErr is why s can no longer send, nil if it can.
func (s *clientStream) writeErr() error {
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

// CloseWrite ends the stream's sending side (END_STREAM); the upstream sees
// a TCP half-close and reading goes on.
func (s *clientStream) CloseWrite() error {
	if err := s.writeErr(); err != nil {
		return nil // already ended, one way or another
	}
	if _, err := s.cc.writeData(s, nil, true); err != nil {
		return err
	}
	s.mu.Lock()
	s.sentEnd = true
	done := s.recvEnd
	s.mu.Unlock()
	s.cc.mu.Lock()
	s.cc.cond.Broadcast()
	s.cc.mu.Unlock()
	if done {
		s.cc.forget(s)
	}
	return nil
}

// Close resets the stream if it is still open, drops what was not read and
// frees its pool slot.
func (s *clientStream) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		open := s.err == nil && !(s.recvEnd && s.sentEnd)
		for _, c := range s.queue {
			putChunk(c)
		}
		unread := s.queued
		s.queue, s.queued = nil, 0
		s.cond.Broadcast()
		s.mu.Unlock()
		s.answer(0, fmt.Errorf("hbone stream closed: %w", net.ErrClosed))
		s.cc.forget(s)
		if open {
			s.cc.writeRST(s.id, http2.ErrCodeCancel)
		}
		if u := s.cc.consumed(unread); u > 0 {
			s.cc.writeWindowUpdate(0, u)
		}
		s.cc.mu.Lock()
		s.cc.cond.Broadcast()
		s.cc.mu.Unlock()
		if s.release != nil {
			s.release()
		}
	})
	return nil
}

// statusError reads a refused CONNECT's short body for its message.
func (s *clientStream) statusError(ctx context.Context) *StatusError {
	var b strings.Builder
	buf := make([]byte, maxErrorBody)
	stop := context.AfterFunc(ctx, func() { s.fail(ctx.Err()) })
	defer stop()
	for b.Len() < maxErrorBody {
		n, err := s.Read(buf[:maxErrorBody-b.Len()])
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	msg := strings.TrimSpace(b.String())
	if msg == "" {
		msg = http.StatusText(s.status)
	}
	return &StatusError{Code: s.status, Message: msg}
}

func (s *clientStream) LocalAddr() net.Addr  { return s.local }
func (s *clientStream) RemoteAddr() net.Addr { return s.remote }

func (s *clientStream) SetDeadline(t time.Time) error      { return zeroDeadline(t) }
func (s *clientStream) SetReadDeadline(t time.Time) error  { return zeroDeadline(t) }
func (s *clientStream) SetWriteDeadline(t time.Time) error { return zeroDeadline(t) }

// Receive chunks: a pool per power-of-two size from 1 KiB to maxFrame, so
// a small DATA frame holds a small chunk.
const minChunk = 1 << 10

var chunkPools [9]sync.Pool // 1 KiB << i, up to 256 KiB (maxFrame)

func chunkClass(n int) int {
	c := 0
	for size := minChunk; size < n && c < len(chunkPools)-1; size <<= 1 {
		c++
	}
	return c
}

// chunkOf copies data into a pooled chunk of its size class.
func chunkOf(data []byte) *[]byte {
	bp := newChunk(len(data))
	copy(*bp, data)
	return bp
}

// newChunk returns a pooled chunk of n bytes.
func newChunk(n int) *[]byte {
	c := chunkClass(n)
	bp, _ := chunkPools[c].Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		b := make([]byte, 0, max(minChunk<<c, n))
		bp = &b
	}
	*bp = (*bp)[:n]
	return bp
}

// putChunk gives a chunk made by chunkOf or newChunk back.
func putChunk(bp *[]byte) {
	c := chunkClass(cap(*bp))
	if cap(*bp) != minChunk<<c {
		return // not one of ours
	}
	chunkPools[c].Put(bp)
}
