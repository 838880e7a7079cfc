//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// Stream errors the reader finds (a http2.StreamError carries them: the
// stream is reset, the connection goes on).
var (
	errStreamOverrun  = errors.New("client overran the stream window")
	errDataAfterEnd   = errors.New("DATA after the client ended the stream")
	errWindowOverflow = errors.New("stream send window overflow")
	errHeadersInData  = errors.New("HEADERS without END_STREAM in the middle of a stream")
)

// readLoop reads the client's preface and then every frame until the
// connection ends or the client breaks the protocol. It returns why:
// a connError when a GOAWAY should tell the client.
//
// DATA payloads are read straight into pooled chunks that the streams
// queue (the Framer would read them into a buffer of its own, to be
// copied again, and keep that buffer, the size of the largest frame, for
// the life of the connection); the Framer reads every other frame. So no
// DATA frame allocates: there is no Frame to reuse (SetReuseFrames).
func (sc *serverConn) readLoop() error {
	if err := sc.readPreface(); err != nil {
		return err
	}
	first := true
	for {
		fh, err := sc.fr.ReadFrameHeader()
		if err == nil && first {
			// The preface is followed by the client's SETTINGS.
			if fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck) {
				return connError{http2.ErrCodeProtocol, "client preface not followed by SETTINGS"}
			}
		}
		if err == nil {
			if fh.Type == http2.FrameData {
				err = sc.readData(fh)
			} else {
				var f http2.Frame
				if f, err = sc.fr.ReadFrameForHeader(fh); err == nil {
					err = sc.handle(f)
				}
			}
		}
		if err == nil && first {
			first = false
			sc.nc.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if first {
				return fmt.Errorf("read client preface: %w", err)
			}
			if err = sc.frameError(err); err != nil {
				return err
			}
		}
	}
}

// frameError sorts out what went wrong reading or handling a frame: a
// stream error resets that stream and the connection goes on (nil);
// anything else ends the connection.
func (sc *serverConn) frameError(err error) error {
	var ce connError
	var se http2.StreamError
	var fce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &se):
		return sc.resetStream(se.StreamID, se.Code, se)
	case errors.As(err, &fce):
		reason := "malformed frame"
		if d := sc.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return connError{http2.ErrCode(fce), reason}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return connError{http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"}
	}
	return fmt.Errorf("read: %w", err)
}

// resetStream resets stream id with code: its handler's context ends and
// its reads and writes fail with cause.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode, cause error) error {
	sc.mu.Lock()
	if id%2 == 1 && id > sc.maxID { // a malformed HEADERS opened it
		sc.maxID = id
	}
	s := sc.streams[id]
	sc.mu.Unlock()
	if s != nil {
		sc.forget(s)
		s.fail(fmt.Errorf("hbone stream reset: %w", cause))
	}
	return sc.queueRST(id, code)
}

// handle processes one frame. A http2.StreamError resets one stream,
// other errors end the connection.
func (sc *serverConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.onHeaders(f)
	case *http2.WindowUpdateFrame:
		return sc.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return sc.onRST(f)
	case *http2.SettingsFrame:
		return sc.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			return sc.queuePingAck(f.Data)
		}
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	}
	// GOAWAY from the client means it opens no more streams: those it
	// has go on. PRIORITY and unknown frames are ignored.
	return nil
}

// readData reads a DATA frame's payload into a pooled chunk and queues
// it on its stream. Bytes for a stream that ended still count against the
// connection window: they are given back at once.
func (sc *serverConn) readData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return connError{http2.ErrCodeProtocol, "DATA on stream 0"}
	}
	n := int(fh.Length) // padding counts for flow control too
	var chunk *[]byte
	if n > 0 {
		chunk = newChunk(n)
		if _, err := io.ReadFull(sc.nc, *chunk); err != nil {
			putChunk(chunk)
			return fmt.Errorf("read: %w", err)
		}
		if fh.Flags.Has(http2.FlagDataPadded) {
			// Rare: move the data down rather than keep an offset per chunk.
			b := *chunk
			pad := int(b[0])
			if pad >= n {
				putChunk(chunk)
				return connError{http2.ErrCodeProtocol, "DATA padding longer than the frame"}
			}
			*chunk = b[:copy(b, b[1:n-pad])]
		}
		if len(*chunk) == 0 {
			putChunk(chunk)
			chunk = nil
		}
	} else if fh.Flags.Has(http2.FlagDataPadded) {
		return connError{http2.ErrCodeProtocol, "padded DATA without a pad length"}
	}

	sc.mu.Lock()
	if int64(n) > sc.recvWin {
		sc.mu.Unlock()
		putChunkOf(chunk)
		return connError{http2.ErrCodeFlowControl, "client overran the connection window"}
	}
	sc.recvWin -= int64(n)
	idle := fh.StreamID > sc.maxID
	s := sc.streams[fh.StreamID]
	sc.mu.Unlock()
	if idle {
		putChunkOf(chunk)
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("DATA on idle stream %d", fh.StreamID)}
	}
	if s == nil {
		putChunkOf(chunk)
		return sc.discard(n)
	}
	data := 0
	if chunk != nil {
		data = len(*chunk)
	}
	taken, err := s.deliver(chunk, n, fh.Flags.Has(http2.FlagDataEndStream))
	if !taken {
		putChunkOf(chunk)
		if derr := sc.discard(n); err == nil {
			err = derr
		}
		return err
	}
	// Padding is never read: it goes back to the connection window now
	// (and to the stream's with its next update).
	if pad := n - data; pad > 0 {
		return sc.discard(pad)
	}
	return nil
}

// putChunkOf gives back chunk unless it is nil.
func putChunkOf(chunk *[]byte) {
	if chunk != nil {
		putChunk(chunk)
	}
}

// discard returns n bytes nobody will read to the connection window.
func (sc *serverConn) discard(n int) error {
	if u := sc.consumed(n); u > 0 {
		return sc.queueWindowUpdate(0, u)
	}
	return nil
}

// onHeaders opens a stream and starts its handler, or takes the
// trailers that end a stream's request.
func (sc *serverConn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("HEADERS opening even stream %d", id)}
	}
	sc.mu.Lock()
	if id <= sc.maxID {
		s := sc.streams[id]
		sc.mu.Unlock()
		switch {
		case s == nil: // trailers of a stream that ended: the HPACK state is all that mattered
			return nil
		case !f.StreamEnded():
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: errHeadersInData}
		}
		_, err := s.deliver(nil, 0, true)
		return err
	}
	sc.maxID = id
	sc.mu.Unlock()
	if f.Truncated {
		return sc.queueRST(id, http2.ErrCodeProtocol) // larger than maxHeaderList
	}

	s := &Stream{Request: sc.request(f), sc: sc, id: id, recvWin: streamWindow, recvEnd: f.StreamEnded()}
	s.cond.L = &s.mu
	ctx, cancel := context.WithCancel(sc.ctx)
	s.cancel = cancel
	sc.mu.Lock()
	if sc.closeErr != nil || sc.draining || len(sc.streams) >= maxConcurrentStreams {
		sc.mu.Unlock()
		cancel()
		return sc.queueRST(id, http2.ErrCodeRefusedStream) // the client may retry elsewhere
	}
	s.sendWin = int64(sc.peerWin)
	sc.streams[id] = s
	sc.served++
	sc.wg.Add(1)
	sc.mu.Unlock()
	go sc.runHandler(ctx, s)
	return nil
}

// request is the Request of a stream's HEADERS.
func (sc *serverConn) request(f *http2.MetaHeadersFrame) Request {
	r := Request{PeerID: sc.peer.id, PeerAddr: sc.peer.remote, LocalAddr: sc.peer.local, Header: http.Header{}}
	for _, hf := range f.RegularFields() {
		k := http.CanonicalHeaderKey(hf.Name)
		r.Header[k] = append(r.Header[k], hf.Value)
	}
	method := f.PseudoValue("method")
	switch auth, err := ParseAuthority(f.PseudoValue("authority")); {
	case method != http.MethodConnect:
		r.Invalid = fmt.Errorf("%w: %q", ErrNotConnect, method)
	case err != nil:
		r.Invalid = fmt.Errorf("%w: %w", ErrBadAuthority, err)
	default:
		r.Authority = auth
	}
	return r
}

func (sc *serverConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if sc.sendWin+inc > 1<<31-1 {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		sc.sendWin += inc
	} else if s := sc.streams[f.StreamID]; s != nil {
		if s.sendWin+inc > 1<<31-1 {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl, Cause: errWindowOverflow}
		}
		s.sendWin += inc
	} else if f.StreamID > sc.maxID {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("WINDOW_UPDATE on idle stream %d", f.StreamID)}
	}
	sc.cond.Broadcast()
	return nil
}

// onRST ends a stream the client reset: its handler's context ends.
func (sc *serverConn) onRST(f *http2.RSTStreamFrame) error {
	sc.mu.Lock()
	idle := f.StreamID > sc.maxID
	s := sc.streams[f.StreamID]
	sc.mu.Unlock()
	if idle {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("RST_STREAM on idle stream %d", f.StreamID)}
	}
	if s != nil {
		sc.forget(s)
		s.fail(clientResetError{f.ErrCode})
	}
	return nil
}

func (sc *serverConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	sc.mu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			var ce http2.ConnectionError
			errors.As(err, &ce)
			return connError{http2.ErrCode(ce), "bad setting: " + st.String()}
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - int64(sc.peerWin)
			for _, s := range sc.streams {
				if s.sendWin+delta > 1<<31-1 {
					return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window"}
				}
				s.sendWin += delta
			}
			sc.peerWin = int32(st.Val)
		case http2.SettingMaxFrameSize:
			sc.peerFrame = st.Val
		case http2.SettingHeaderTableSize:
			sc.peerTable.Store(st.Val)
		}
		return nil
	})
	sc.cond.Broadcast()
	sc.mu.Unlock()
	if err != nil {
		return err
	}
	return sc.queueSettingsAck()
}
