//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serverConn is the server side of one HBONE connection: HTTP/2 that only
// answers CONNECT, built on x/net's Framer and hpack like clientConn.
//
// One reader goroutine per connection (serve's) takes every frame off the
// wire and queues DATA on its stream's receive queue; it never writes to
// the connection, so it keeps reading however slowly the client reads
// (the control frames it answers with, SETTINGS and PING acks, RST_STREAM
// and window updates for discarded data, are queued and written by a
// goroutine that lives only while some are pending). Every stream's
// handler runs on its own goroutine, and its answer and writes go straight
// from there to the connection under wmu, one frame per write(2) (see
// batchConn). A stream holds no goroutine of the connection and no buffer
// of its own: only received data that the handler has not read yet.
type serverConn struct {
	log  *slog.Logger
	hard net.Conn // the socket: Server.Close closes it at once
	nc   net.Conn // HTTP/2's connection: the TLS connection, batched
	peer peer
	h    Handle
	ctx  context.Context // the streams' contexts derive from it; canceled by fail
	stop context.CancelFunc

	wmu       sync.Mutex // orders frames on the wire; guards fr's write side, henc, hbuf, tableSize
	fr        *http2.Framer
	henc      *hpack.Encoder
	hbuf      bytes.Buffer
	tableSize uint32 // the encoder's dynamic table limit; guarded by wmu
	peerTable atomic.Uint32

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, or the connection ended
	started      bool       // HTTP/2 is running; guarded by mu
	draining     bool       // GOAWAY queued (Shutdown, idle): no new streams; guarded by mu
	drainOnStart bool       // Drain came during the handshake: GOAWAY right after the preface; guarded by mu
	goAwaySent   bool       // that GOAWAY is on the wire; guarded by mu
	streams      map[uint32]*Stream
	maxID        uint32 // highest stream id the client opened
	served       int    // streams handed to the handler
	peerWin      int32  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame    uint32 // the client's SETTINGS_MAX_FRAME_SIZE
	sendWin      int64  // connection-level send window
	recvWin      int64  // what the client may still send on the connection
	recvUnacked  int64  // read by streams, not yet returned to the client
	closeErr     error  // set once the connection is done
	idle         *time.Timer
	linger       *time.Timer // closes a drained connection; guarded by mu

	// Control frames queued by the reader (and by Shutdown and the idle
	// timer), written out by flushControl. Guarded by mu.
	ctlFr       *http2.Framer // writes into ctlBuf
	ctlBuf      bytes.Buffer
	ctlGoAway   bool   // ctlBuf holds a GOAWAY
	ctlFlushing bool   // a flushControl goroutine runs
	ctlOut      []byte // what flushControl writes; only it uses this

	// wg counts stream handlers and flushControl; Add only under mu while
	// closeErr is nil.
	wg sync.WaitGroup
}

// maxControlQueue bounds the control frames waiting to be written: a
// client that keeps sending PINGs (or frames that need an answer) and
// reads none of the answers loses its connection (ENHANCE_YOUR_CALM).
const maxControlQueue = 64 << 10

// connError is a connection error: the connection ends with GOAWAY.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("http2 %v: %s", e.code, e.reason) }

// clientResetError is a RST_STREAM from the client.
type clientResetError struct{ code http2.ErrCode }

func (e clientResetError) Error() string { return "hbone stream reset by client: " + e.code.String() }

// errDrained ends a connection whose streams ended after its GOAWAY.
var errDrained = errors.New("drained after GOAWAY")

// drainLinger is how long a drained connection stays open after its
// GOAWAY went out and its last stream ended, reading (and refusing) what
// the client sent before it saw the GOAWAY. Closing at once, with the
// client's frames unread, would make the kernel answer with a reset,
// which can destroy the GOAWAY in the client's receive queue before it
// read it: the client would then not know its last CONNECT went
// unprocessed. The client usually closes first.
const drainLinger = time.Second

// serve runs the connection until it ends: it writes the server's
// preface, reads the client's, then reads frames. It returns once every
// stream handler has returned, with the number of streams served and why
// the connection ended.
func (sc *serverConn) serve(ctx context.Context, nc net.Conn, p peer, h Handle) (int, error) {
	sc.nc, sc.peer, sc.h = nc, p, h
	sc.ctx, sc.stop = context.WithCancel(ctx)
	sc.cond = sync.NewCond(&sc.mu)
	sc.streams = map[uint32]*Stream{}
	sc.peerWin, sc.peerFrame = initialWindow, defaultFrame
	sc.sendWin, sc.recvWin = initialWindow, connWindow
	sc.fr = http2.NewFramer(nc, nc)
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.fr.MaxHeaderListSize = maxHeaderList
	sc.fr.SetMaxReadFrameSize(maxFrame)
	sc.henc = hpack.NewEncoder(&sc.hbuf)
	sc.tableSize = 4096
	sc.peerTable.Store(4096)
	sc.ctlFr = http2.NewFramer(&sc.ctlBuf, nil)

	sc.mu.Lock()
	if sc.draining { // Shutdown came during the handshake
		sc.mu.Unlock()
		sc.stop()
		return 0, errors.New("server shutting down")
	}
	sc.started = true
	sc.idle = time.AfterFunc(serverIdleTimeout, sc.onIdle)
	sc.mu.Unlock()

	err := sc.writePreface()
	if err == nil {
		sc.mu.Lock()
		if sc.drainOnStart {
			// Its first CONNECT, refused unprocessed, is sent again on
			// another connection by the client.
			sc.queueGoAwayLocked()
		}
		sc.mu.Unlock()
		err = sc.readLoop()
	}
	var ce connError
	if errors.As(err, &ce) {
		sc.goAway(ce)
	}
	sc.fail(err)
	sc.wg.Wait()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.served, sc.closeErr // the first reason: a drain closes the socket under the reader
}

// writePreface sends the server's SETTINGS and opens the connection
// window.
func (sc *serverConn) writePreface() error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	err := sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrame},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	if err == nil {
		err = sc.fr.WriteWindowUpdate(0, connWindow-initialWindow)
	}
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// readPreface reads the client's connection preface within
// prefaceTimeout; the deadline stays until its SETTINGS were read.
func (sc *serverConn) readPreface() error {
	sc.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(sc.nc, buf[:]); err != nil {
		return fmt.Errorf("read preface: %w", err)
	}
	if string(buf[:]) != http2.ClientPreface {
		return fmt.Errorf("bad preface %q", buf[:])
	}
	return nil
}

// fail ends the connection with err: streams fail and their handlers'
// contexts end, writers wake, the connection closes (which ends the
// reader). Only the first call counts.
func (sc *serverConn) fail(err error) {
	sc.mu.Lock()
	if sc.closeErr != nil {
		sc.mu.Unlock()
		return
	}
	if err == nil {
		err = io.EOF
	}
	if sc.goAwaySent && len(sc.streams) == 0 && errors.Is(err, io.EOF) {
		err = errDrained // the client closed on our GOAWAY
	}
	sc.closeErr = fmt.Errorf("%w: %w", errConnClosed, err)
	streams := sc.streams
	sc.streams = map[uint32]*Stream{}
	sc.cond.Broadcast()
	if sc.idle != nil {
		sc.idle.Stop()
	}
	if sc.linger != nil {
		sc.linger.Stop()
	}
	sc.mu.Unlock()
	sc.stop()
	for _, s := range streams {
		s.fail(sc.closeErr)
	}
	sc.nc.Close()
}

// goAway sends GOAWAY for a connection error, bounded by closeTimeout
// (a writer stuck on a client that does not read gives up too: the
// connection is ending).
func (sc *serverConn) goAway(ce connError) {
	sc.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	sc.mu.Lock()
	last := sc.maxID
	sc.mu.Unlock()
	sc.wmu.Lock()
	sc.fr.WriteGoAway(last, ce.code, []byte(ce.reason))
	sc.wmu.Unlock()
	sc.log.Debug("hbone connection error", "peer", sc.peer.remote.String(), "peer_identity", sc.peer.id.String(), "err", ce)
}

// shutdown starts a graceful close: GOAWAY now, the connection closes once
// its streams have ended. A connection still in its handshake closes at
// once. It does not block.
func (sc *serverConn) shutdown() {
	sc.mu.Lock()
	if !sc.started {
		sc.draining = true
		sc.mu.Unlock()
		sc.hard.Close()
		return
	}
	sc.queueGoAwayLocked()
	sc.mu.Unlock()
}

// drain is shutdown for a connection still in its handshake too: it is
// not cut but started, and gets its GOAWAY right after the preface.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.started {
		sc.drainOnStart = true
		return
	}
	sc.queueGoAwayLocked()
}

// onIdle closes a connection that had no streams for serverIdleTimeout,
// with a GOAWAY first.
func (sc *serverConn) onIdle() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.streams) == 0 {
		sc.queueGoAwayLocked()
	}
}

// queueGoAwayLocked queues a graceful GOAWAY (once) and stops new streams.
func (sc *serverConn) queueGoAwayLocked() {
	if sc.draining || sc.closeErr != nil {
		return
	}
	sc.draining = true
	sc.ctlFr.WriteGoAway(sc.maxID, http2.ErrCodeNo, nil)
	sc.ctlGoAway = true
	sc.flushLocked()
}

// closeIfDrainedLocked closes a draining connection, drainLinger from
// now, once it has no streams left and its GOAWAY is out.
func (sc *serverConn) closeIfDrainedLocked() {
	if !sc.goAwaySent || len(sc.streams) != 0 || sc.closeErr != nil || sc.linger != nil {
		return
	}
	sc.linger = time.AfterFunc(drainLinger, func() { sc.fail(errDrained) })
}

// queueRST, queueWindowUpdate, queueSettingsAck and queuePingAck queue
// control frames; the reader never writes to the connection itself.
// Each returns a connError when the queue is full.
func (sc *serverConn) queueRST(id uint32, code http2.ErrCode) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.ctlFr.WriteRSTStream(id, code)
	return sc.flushLocked()
}

func (sc *serverConn) queueWindowUpdate(id, n uint32) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.ctlFr.WriteWindowUpdate(id, n)
	return sc.flushLocked()
}

func (sc *serverConn) queueSettingsAck() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.ctlFr.WriteSettingsAck()
	return sc.flushLocked()
}

func (sc *serverConn) queuePingAck(data [8]byte) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.ctlFr.WritePing(true, data)
	return sc.flushLocked()
}

// flushLocked starts flushControl unless it runs already.
func (sc *serverConn) flushLocked() error {
	if sc.ctlBuf.Len() > maxControlQueue {
		return connError{http2.ErrCodeEnhanceYourCalm, "client does not read the answers to its frames"}
	}
	if sc.ctlFlushing || sc.closeErr != nil {
		return nil
	}
	sc.ctlFlushing = true
	sc.wg.Add(1)
	go sc.flushControl()
	return nil
}

// flushControl writes the queued control frames until none are left.
func (sc *serverConn) flushControl() {
	defer sc.wg.Done()
	for {
		sc.mu.Lock()
		if sc.ctlBuf.Len() == 0 || sc.closeErr != nil {
			sc.ctlFlushing = false
			sc.mu.Unlock()
			return
		}
		sc.ctlOut = append(sc.ctlOut[:0], sc.ctlBuf.Bytes()...)
		sc.ctlBuf.Reset()
		goAway := sc.ctlGoAway
		sc.ctlGoAway = false
		sc.mu.Unlock()

		sc.wmu.Lock()
		_, err := sc.nc.Write(sc.ctlOut)
		sc.wmu.Unlock()
		if err != nil {
			sc.fail(fmt.Errorf("write control frames: %w", err))
			continue // ends the loop: closeErr is set
		}
		if goAway {
			sc.mu.Lock()
			sc.goAwaySent = true
			sc.closeIfDrainedLocked()
			sc.mu.Unlock()
		}
	}
}

// forget drops s from the connection's streams; the connection closes
// when it was the last one of a draining connection, and starts its idle
// timer when it was the last one.
func (sc *serverConn) forget(s *Stream) {
	sc.mu.Lock()
	if sc.streams[s.id] == s {
		delete(sc.streams, s.id)
		if len(sc.streams) == 0 && sc.closeErr == nil {
			sc.idle.Reset(serverIdleTimeout)
		}
	}
	sc.closeIfDrainedLocked()
	sc.mu.Unlock()
}

// writeHeaders answers stream id with status and header.
func (sc *serverConn) writeHeaders(id uint32, status int, header []hpack.HeaderField, end bool) error {
	sc.wmu.Lock()
	if t := sc.peerTable.Load(); t != sc.tableSize {
		sc.henc.SetMaxDynamicTableSizeLimit(t)
		sc.tableSize = t
	}
	sc.hbuf.Reset()
	sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, f := range header {
		sc.henc.WriteField(f)
	}
	err := sc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: sc.hbuf.Bytes(), EndHeaders: true, EndStream: end})
	sc.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("write headers: %w", err)
		sc.fail(err)
	}
	return err
}

// writeData sends p on stream s as DATA frames within the flow-control
// windows, blocking while they are closed. end marks the last frame.
func (sc *serverConn) writeData(s *Stream, p []byte, end bool) (int, error) {
	sent := 0
	for {
		n, err := sc.takeWindow(s, len(p)-sent)
		if err != nil {
			return sent, err
		}
		last := end && sent+n == len(p)
		sc.wmu.Lock()
		err = sc.fr.WriteData(s.id, last, p[sent:sent+n])
		sc.wmu.Unlock()
		if err != nil {
			sc.fail(fmt.Errorf("write data: %w", err))
			return sent, err
		}
		sent += n
		if sent == len(p) {
			return sent, nil
		}
	}
}

// takeWindow waits until s may send and takes up to want bytes of both
// windows (at most one frame of the client's size). An empty write takes
// nothing.
func (sc *serverConn) takeWindow(s *Stream, want int) (int, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for {
		if sc.closeErr != nil {
			return 0, sc.closeErr
		}
		if err := s.writeErr(); err != nil {
			return 0, err
		}
		if want == 0 {
			return 0, nil
		}
		if s.sendWin > 0 && sc.sendWin > 0 {
			n := min(int64(want), s.sendWin, sc.sendWin, int64(sc.peerFrame))
			s.sendWin -= n
			sc.sendWin -= n
			return int(n), nil
		}
		sc.cond.Wait()
	}
}

// wakeWriters wakes the writers waiting for a window, so they see a
// stream's new state.
func (sc *serverConn) wakeWriters() {
	sc.mu.Lock()
	sc.cond.Broadcast()
	sc.mu.Unlock()
}

// consumed returns n bytes read (or discarded) to the client's connection
// window, and asks the caller to send the update when enough gathered (a
// quarter of the window: fewer, larger updates).
func (sc *serverConn) consumed(n int) (update uint32) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.recvUnacked += int64(n)
	if sc.recvUnacked < connWindow/4 {
		return 0
	}
	update, sc.recvUnacked = uint32(sc.recvUnacked), 0
	sc.recvWin += int64(update)
	return update
}

// writeWindowUpdate sends a WINDOW_UPDATE from a stream's reader (stream
// 0: the connection).
func (sc *serverConn) writeWindowUpdate(id, n uint32) {
	sc.wmu.Lock()
	err := sc.fr.WriteWindowUpdate(id, n)
	sc.wmu.Unlock()
	if err != nil {
		sc.fail(fmt.Errorf("write window update: %w", err))
	}
}

// writeRST resets stream id from a handler's goroutine.
func (sc *serverConn) writeRST(id uint32, code http2.ErrCode) {
	sc.wmu.Lock()
	err := sc.fr.WriteRSTStream(id, code)
	sc.wmu.Unlock()
	if err != nil {
		sc.fail(fmt.Errorf("write rst_stream: %w", err))
	}
}

// runHandler runs the handler of s and ends the stream after it: a
// handler that did not answer refuses, one that left the stream open
// resets it. A handler that panics has its stream reset
// (INTERNAL_ERROR); the panic is logged and goes no further.
func (sc *serverConn) runHandler(ctx context.Context, s *Stream) {
	defer sc.wg.Done()
	defer s.cancel()
	defer func() {
		if r := recover(); r != nil {
			sc.log.Error("panic in hbone stream handler, stream reset",
				"peer", sc.peer.remote.String(), "peer_identity", sc.peer.id.String(), "authority", s.Authority.String(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.abort(http2.ErrCodeInternal)
		}
	}()
	sc.h(ctx, s)
	if s.Status() == 0 { // a handler that forgot: the client must not hang
		s.Refuse(errors.New("not answered"))
	}
	s.Close()
}

// refusal is the answer to a refused request: http.Error's headers and
// its short text body.
func refusal(code int) (header []hpack.HeaderField, body []byte) {
	body = []byte(http.StatusText(code) + "\n")
	header = []hpack.HeaderField{
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "x-content-type-options", Value: "nosniff"},
		{Name: "content-length", Value: strconv.Itoa(len(body))},
	}
	if code == http.StatusMethodNotAllowed {
		header = append(header, hpack.HeaderField{Name: "allow", Value: http.MethodConnect})
	}
	return header, body
}
