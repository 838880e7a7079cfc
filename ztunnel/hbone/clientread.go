//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// readLoop reads every frame of the connection until it ends.
func (cc *clientConn) readLoop() {
	defer close(cc.readerExited)
	for {
		f, err := cc.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) { // a bad frame on one stream only
				cc.resetStream(se.StreamID, se.Code, err)
				continue
			}
			cc.fail(fmt.Errorf("read: %w", err))
			return
		}
		cc.lastFrameAt.Store(time.Now().UnixNano())
		if err := cc.handle(f); err != nil {
			cc.fail(err)
			return
		}
	}
}

// handle processes one frame; an error ends the connection.
func (cc *clientConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return cc.onData(f)
	case *http2.MetaHeadersFrame:
		cc.onHeaders(f)
	case *http2.WindowUpdateFrame:
		return cc.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		if s := cc.stream(f.StreamID); s != nil {
			s.reset(f.ErrCode)
		}
	case *http2.SettingsFrame:
		return cc.onSettings(f)
	case *http2.PingFrame:
		return cc.onPing(f)
	case *http2.GoAwayFrame:
		cc.onGoAway(f)
	}
	return nil // PRIORITY and unknown frames are ignored
}

func (cc *clientConn) stream(id uint32) *clientStream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id]
}

// onData queues a DATA frame's payload on its stream. Bytes for a stream
// that is gone still count against the connection window: they are given
// back at once.
func (cc *clientConn) onData(f *http2.DataFrame) error {
	n := int(f.Length) // padding counts for flow control too
	s := cc.stream(f.StreamID)
	if s == nil || !s.deliver(f.Data(), f.StreamEnded()) {
		if u := cc.consumed(n); u > 0 {
			cc.writeWindowUpdate(0, u)
		}
		return nil
	}
	// Padding is never read by the app: return it now.
	if pad := n - len(f.Data()); pad > 0 {
		if u := cc.consumed(pad); u > 0 {
			cc.writeWindowUpdate(0, u)
		}
	}
	return nil
}

// onHeaders takes the answer to a CONNECT (or trailers, which end the
// stream).
func (cc *clientConn) onHeaders(f *http2.MetaHeadersFrame) {
	s := cc.stream(f.StreamID)
	if s == nil {
		return
	}
	if s.status != 0 { // trailers
		if f.StreamEnded() {
			s.deliver(nil, true)
		}
		return
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 {
		s.answer(0, fmt.Errorf("bad :status %q in the answer to CONNECT", f.PseudoValue("status")))
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, nil)
		return
	}
	if code < 200 { // informational: wait for the final answer
		return
	}
	s.answer(code, nil)
	if f.StreamEnded() {
		s.deliver(nil, true)
	}
}

func (cc *clientConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if cc.sendWin+inc > 1<<31-1 {
			return errors.New("connection window overflow")
		}
		cc.sendWin += inc
	} else if s := cc.streams[f.StreamID]; s != nil {
		s.sendWin += inc
	}
	cc.cond.Broadcast()
	return nil
}

func (cc *clientConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	cc.mu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - int64(cc.peerWin)
			for _, s := range cc.streams {
				s.sendWin += delta
			}
			cc.peerWin = int32(st.Val)
		case http2.SettingMaxFrameSize:
			cc.peerFrame = st.Val
		case http2.SettingMaxConcurrentStreams:
			cc.peerStreams = st.Val
		}
		return nil
	})
	cc.cond.Broadcast()
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if err := cc.fr.WriteSettingsAck(); err != nil {
		return fmt.Errorf("write settings ack: %w", err)
	}
	return nil
}

func (cc *clientConn) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		cc.mu.Lock()
		if len(cc.pingWaiters) > 0 {
			close(cc.pingWaiters[0])
			cc.pingWaiters = cc.pingWaiters[1:]
		}
		cc.mu.Unlock()
		return nil
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if err := cc.fr.WritePing(true, f.Data); err != nil {
		return fmt.Errorf("write ping ack: %w", err)
	}
	return nil
}

// onGoAway stops new streams; those above the last one the server
// processed fail as unprocessed, so their Dials retry elsewhere.
func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	var lost []*clientStream
	for id, s := range cc.streams {
		if id > f.LastStreamID {
			lost = append(lost, s)
			delete(cc.streams, id)
		}
	}
	cc.mu.Unlock()
	err := fmt.Errorf("%w: server sent GOAWAY (%v) before it", errUnprocessed, f.ErrCode)
	for _, s := range lost {
		s.fail(err)
	}
}

// resetStream resets stream id with code and fails it with err.
func (cc *clientConn) resetStream(id uint32, code http2.ErrCode, err error) {
	if s := cc.stream(id); s != nil {
		if err == nil {
			err = streamError{code}
		}
		s.fail(err)
		cc.forget(s)
	}
	cc.writeRST(id, code)
}
