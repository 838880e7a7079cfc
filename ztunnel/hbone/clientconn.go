//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientConn is the client side of one HBONE connection: HTTP/2 that only
// sends CONNECT, built on x/net's Framer and hpack. One reader goroutine
// per connection takes every frame off the wire and hands DATA to its
// stream's receive queue; a stream's writes go straight from the writing
// goroutine to the connection under wmu, one frame per write(2) (see
// batchConn). A stream holds no goroutine and no buffer of its own: only
// received data that the app has not read yet.
type clientConn struct {
	tc  net.Conn // the TLS connection, batched
	raw *tls.Conn
	log *slog.Logger

	wmu  sync.Mutex // orders frames on the wire; guards fr's write side, henc, hbuf
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu           sync.Mutex
	cond         *sync.Cond // send windows grew, or the connection ended
	streams      map[uint32]*clientStream
	nextID       uint32
	reserved     int    // streams promised by reserve and not yet opened
	peerWin      int32  // the server's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame    uint32 // the server's SETTINGS_MAX_FRAME_SIZE
	peerStreams  uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	sendWin      int64  // connection-level send window
	recvUnacked  int64  // read by streams, not yet returned to the server
	goAway       bool   // the server sent GOAWAY: no new streams
	closeErr     error  // set once the connection is done
	pingWaiters  []chan struct{}
	lastFrameAt  atomic.Int64 // unix nanos of the last frame read
	keepalive    *time.Timer
	readerExited chan struct{}
}

// Protocol constants.
const (
	initialWindow = 65535 // RFC 9113 default window
	defaultFrame  = 16384 // RFC 9113 default SETTINGS_MAX_FRAME_SIZE
	maxHeaderList = 64 << 10
)

// errConnClosed wraps the reason a connection ended for its streams.
var errConnClosed = errors.New("hbone connection closed")

// errUnprocessed marks a CONNECT the server never processed (refused
// stream, GOAWAY before it, connection gone before it was sent): safe to
// send again on another connection.
var errUnprocessed = errors.New("not processed by the server")

// streamError is a RST_STREAM from the server.
type streamError struct{ code http2.ErrCode }

func (e streamError) Error() string { return "hbone stream reset by server: " + e.code.String() }

// newClientConn starts HTTP/2 on an established TLS connection: it writes
// the preface, its SETTINGS and the connection window, and starts the
// reader. It does not wait for the server's SETTINGS: streams may open at
// once (their frames fit the protocol defaults until the SETTINGS come).
func newClientConn(raw *tls.Conn, log *slog.Logger) (*clientConn, error) {
	tc := tlsConn(raw)
	cc := &clientConn{
		tc: tc, raw: raw, log: log,
		streams: map[uint32]*clientStream{}, nextID: 1,
		peerWin: initialWindow, peerFrame: defaultFrame, peerStreams: 1000,
		sendWin: initialWindow, readerExited: make(chan struct{}),
	}
	cc.cond = sync.NewCond(&cc.mu)
	cc.fr = http2.NewFramer(tc, tc)
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.MaxHeaderListSize = maxHeaderList
	cc.fr.SetMaxReadFrameSize(maxFrame)
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	cc.lastFrameAt.Store(time.Now().UnixNano())
	if err := cc.writePreface(); err != nil {
		return nil, err
	}
	cc.keepalive = time.AfterFunc(pingAfter, cc.checkAlive)
	go cc.readLoop()
	return cc, nil
}

func (cc *clientConn) writePreface() error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if _, err := io.WriteString(cc.tc, http2.ClientPreface); err != nil {
		return fmt.Errorf("write preface: %w", err)
	}
	err := cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrame},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	if err == nil {
		err = cc.fr.WriteWindowUpdate(0, connWindow-initialWindow)
	}
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// reserve promises a stream to the caller if the connection takes new
// ones and the server's stream limit has room.
func (cc *clientConn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.usableLocked() || uint32(len(cc.streams)+cc.reserved) >= cc.peerStreams {
		return false
	}
	cc.reserved++
	return true
}

// usable reports whether new streams may open on the connection.
func (cc *clientConn) usable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.usableLocked()
}

func (cc *clientConn) usableLocked() bool {
	return cc.closeErr == nil && !cc.goAway && cc.nextID < 1<<31-1
}

// closed reports whether the connection has ended.
func (cc *clientConn) closed() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.closeErr != nil
}

// Close ends the connection and every stream on it.
func (cc *clientConn) Close() error {
	cc.fail(errors.New("closed by the client"))
	<-cc.readerExited
	return nil
}

// fail ends the connection with err: streams fail, the socket closes (which
// ends the reader). Only the first call counts.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.closeErr != nil {
		cc.mu.Unlock()
		return
	}
	cc.closeErr = fmt.Errorf("%w: %w", errConnClosed, err)
	streams := cc.streams
	cc.streams = map[uint32]*clientStream{}
	for _, w := range cc.pingWaiters {
		close(w)
	}
	cc.pingWaiters = nil
	cc.cond.Broadcast()
	cc.mu.Unlock()
	cc.keepalive.Stop()
	for _, s := range streams {
		s.fail(cc.closeErr)
	}
	cc.tc.Close()
}

// open sends a CONNECT for authority with header on a stream reserve
// promised, and waits for the answer (or ctx). A non-200 answer is a
// *StatusError. The stream outlives ctx.
func (cc *clientConn) open(ctx context.Context, authority string, header map[string][]string) (*clientStream, error) {
	s, err := cc.sendConnect(authority, header)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.answered:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if s.status == 200 {
		return s, nil
	}
	err = s.answerErr
	if err == nil {
		err = s.statusError(ctx)
	}
	s.Close()
	return nil, err
}

// sendConnect registers a stream and writes its HEADERS. Stream ids must
// reach the wire in order, so the id is taken under wmu.
func (cc *clientConn) sendConnect(authority string, header map[string][]string) (*clientStream, error) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.mu.Lock()
	cc.reserved--
	if !cc.usableLocked() {
		err := cc.closeErr
		if err == nil {
			err = errors.New("connection going away")
		}
		cc.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", errUnprocessed, err)
	}
	s := newClientStream(cc, cc.nextID, int64(cc.peerWin))
	cc.nextID += 2
	cc.streams[s.id] = s
	cc.mu.Unlock()

	cc.hbuf.Reset()
	cc.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	cc.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	for k, vs := range header {
		for _, v := range vs {
			cc.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(k), Value: v})
		}
	}
	if cc.hbuf.Len() > defaultFrame {
		cc.forget(s)
		return nil, fmt.Errorf("connect headers of %d bytes: too large", cc.hbuf.Len())
	}
	err := cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: cc.hbuf.Bytes(), EndHeaders: true})
	if err != nil {
		cc.forget(s)
		cc.fail(fmt.Errorf("write headers: %w", err)) // takes mu, not wmu
		return nil, fmt.Errorf("%w: write connect: %w", errUnprocessed, err)
	}
	return s, nil
}

// forget drops s from the connection's streams.
func (cc *clientConn) forget(s *clientStream) {
	cc.mu.Lock()
	if cc.streams[s.id] == s {
		delete(cc.streams, s.id)
	}
	cc.mu.Unlock()
}

// writeData sends p on stream s as DATA frames within the flow-control
// windows, blocking while they are closed. end marks the last frame.
func (cc *clientConn) writeData(s *clientStream, p []byte, end bool) (int, error) {
	sent := 0
	for {
		n, err := cc.takeWindow(s, len(p)-sent)
		if err != nil {
			return sent, err
		}
		last := end && sent+n == len(p)
		cc.wmu.Lock()
		err = cc.fr.WriteData(s.id, last, p[sent:sent+n])
		cc.wmu.Unlock()
		if err != nil {
			cc.fail(fmt.Errorf("write data: %w", err))
			return sent, err
		}
		sent += n
		if sent == len(p) {
			return sent, nil
		}
	}
}

// takeWindow waits until s may send and takes up to want bytes of both
// windows (at most one frame). An empty write takes nothing.
func (cc *clientConn) takeWindow(s *clientStream, want int) (int, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		if cc.closeErr != nil {
			return 0, cc.closeErr
		}
		if err := s.writeErr(); err != nil {
			return 0, err
		}
		if want == 0 {
			return 0, nil
		}
		if s.sendWin > 0 && cc.sendWin > 0 {
			n := min(int64(want), s.sendWin, cc.sendWin, int64(cc.peerFrame))
			s.sendWin -= n
			cc.sendWin -= n
			return int(n), nil
		}
		cc.cond.Wait()
	}
}

// consumed returns n bytes a stream's reader took to the server's
// connection window, and asks the caller to send the update when enough
// gathered (a quarter of the window: fewer, larger updates).
func (cc *clientConn) consumed(n int) (update uint32) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.recvUnacked += int64(n)
	if cc.recvUnacked < connWindow/4 {
		return 0
	}
	update, cc.recvUnacked = uint32(cc.recvUnacked), 0
	return update
}

// writeWindowUpdate sends a WINDOW_UPDATE (stream 0: the connection).
func (cc *clientConn) writeWindowUpdate(id, n uint32) {
	cc.wmu.Lock()
	err := cc.fr.WriteWindowUpdate(id, n)
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(fmt.Errorf("write window update: %w", err))
	}
}

// writeRST resets stream id.
func (cc *clientConn) writeRST(id uint32, code http2.ErrCode) {
	cc.wmu.Lock()
	err := cc.fr.WriteRSTStream(id, code)
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(fmt.Errorf("write rst_stream: %w", err))
	}
}

// ping sends a PING and waits for its answer or ctx.
func (cc *clientConn) ping(ctx context.Context) error {
	done := make(chan struct{})
	cc.mu.Lock()
	if cc.closeErr != nil {
		cc.mu.Unlock()
		return cc.closeErr
	}
	cc.pingWaiters = append(cc.pingWaiters, done)
	cc.mu.Unlock()
	cc.wmu.Lock()
	err := cc.fr.WritePing(false, [8]byte{'h', 'b', 'o', 'n', 'e'})
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(fmt.Errorf("write ping: %w", err))
	}
	select {
	case <-done:
		if cc.closed() {
			return cc.err()
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (cc *clientConn) err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.closeErr
}

// checkAlive pings a connection that has been quiet for pingAfter and
// closes it when nothing arrives within pingTimeout: a vanished peer
// would otherwise hold its streams forever.
func (cc *clientConn) checkAlive() {
	if cc.closed() {
		return
	}
	quiet := time.Since(time.Unix(0, cc.lastFrameAt.Load()))
	if quiet < pingAfter {
		cc.keepalive.Reset(pingAfter - quiet)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := cc.ping(ctx); err != nil {
		cc.fail(fmt.Errorf("no answer to a keepalive ping within %v: %w", pingTimeout, err))
		return
	}
	cc.keepalive.Reset(pingAfter)
}
