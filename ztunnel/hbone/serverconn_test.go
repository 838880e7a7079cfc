//lint:file-ignore SA1019 x/net/http2 is deprecated for net/http, but its Framer and hpack are the HTTP/2 wire codec HBONE needs.

package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests here speak raw HTTP/2 to a server connection over net.Pipe
// (no TLS: serve takes any net.Conn), so they can send what no real
// client would.

// pipeServer serves one connection over net.Pipe with h and returns the
// client's end and a channel closed once serve (and every handler) has
// returned.
func pipeServer(t testing.TB, h Handle) (net.Conn, <-chan struct{}) {
	t.Helper()
	srv := NewServer(ServerOptions{Logger: quietLogger()})
	a, b := net.Pipe()
	sc := &serverConn{log: srv.log, hard: a}
	if !srv.track(sc) {
		t.Fatal("server closed")
	}
	done := make(chan struct{})
	p := peer{id: idA, remote: netip.MustParseAddrPort("10.0.0.1:40000"), local: netip.MustParseAddrPort("10.0.0.2:15008")}
	go func() {
		defer close(done)
		defer srv.untrack(sc)
		defer a.Close()
		srv.serve(context.Background(), sc, a, p, h)
	}()
	t.Cleanup(func() {
		b.Close()
		<-done
	})
	return b, done
}

// frame is what the test client keeps of a frame the server sent.
type frame struct {
	typ    http2.FrameType
	stream uint32
	flags  http2.Flags
	code   http2.ErrCode // RST_STREAM, GOAWAY
	last   uint32        // GOAWAY: the last stream the server processed
	status string        // HEADERS
	data   []byte        // DATA
	incr   uint32        // WINDOW_UPDATE
}

// h2Client is a hand-driven HTTP/2 client: it writes frames itself and
// collects every frame the server sends.
type h2Client struct {
	t    testing.TB
	c    net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu     sync.Mutex
	cond   sync.Cond
	frames []frame
	err    error // the read side ended
}

// newH2Client starts HTTP/2 on c: the preface, empty SETTINGS, and a
// reader that collects the server's frames.
func newH2Client(t testing.TB, c net.Conn) *h2Client {
	hc := &h2Client{t: t, c: c, fr: http2.NewFramer(c, c)}
	hc.cond.L = &hc.mu
	hc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	hc.fr.SetMaxReadFrameSize(maxFrame)
	hc.henc = hpack.NewEncoder(&hc.hbuf)
	go hc.read()
	hc.write(func(fr *http2.Framer) error {
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			return err
		}
		return fr.WriteSettings()
	})
	return hc
}

func (hc *h2Client) read() {
	for {
		f, err := hc.fr.ReadFrame()
		hc.mu.Lock()
		if err != nil {
			hc.err = err
			hc.cond.Broadcast()
			hc.mu.Unlock()
			return
		}
		fi := frame{typ: f.Header().Type, stream: f.Header().StreamID, flags: f.Header().Flags}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			fi.code = f.ErrCode
		case *http2.GoAwayFrame:
			fi.code = f.ErrCode
			fi.last = f.LastStreamID
		case *http2.MetaHeadersFrame:
			fi.status = f.PseudoValue("status")
		case *http2.DataFrame:
			fi.data = bytes.Clone(f.Data())
		case *http2.WindowUpdateFrame:
			fi.incr = f.Increment
		}
		hc.frames = append(hc.frames, fi)
		hc.cond.Broadcast()
		hc.mu.Unlock()
	}
}

func (hc *h2Client) write(w func(fr *http2.Framer) error) {
	hc.t.Helper()
	hc.wmu.Lock()
	defer hc.wmu.Unlock()
	if err := w(hc.fr); err != nil {
		hc.t.Fatalf("client write: %v", err)
	}
}

// connect opens stream id with a CONNECT to authority.
func (hc *h2Client) connect(id uint32, authority string) {
	hc.t.Helper()
	hc.write(func(fr *http2.Framer) error {
		hc.hbuf.Reset()
		hc.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		hc.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hc.hbuf.Bytes(), EndHeaders: true})
	})
}

// await waits for a frame for which match is true, or for the connection
// to end (then ok is false).
func (hc *h2Client) await(what string, match func(f frame) bool) (f frame, ok bool) {
	hc.t.Helper()
	timer := time.AfterFunc(5*time.Second, func() {
		hc.mu.Lock()
		if hc.err == nil {
			hc.err = errors.New("timed out")
		}
		hc.cond.Broadcast()
		hc.mu.Unlock()
	})
	defer timer.Stop()
	hc.mu.Lock()
	defer hc.mu.Unlock()
	for i := 0; ; i++ {
		for ; i < len(hc.frames); i++ {
			if match(hc.frames[i]) {
				return hc.frames[i], true
			}
		}
		if hc.err != nil {
			if errors.Is(hc.err, io.EOF) || errors.Is(hc.err, io.ErrClosedPipe) {
				return frame{}, false
			}
			hc.t.Fatalf("waiting for %s: %v", what, hc.err)
		}
		hc.cond.Wait()
		i--
	}
}

func isRST(id uint32, code http2.ErrCode) func(frame) bool {
	return func(f frame) bool { return f.typ == http2.FrameRSTStream && f.stream == id && f.code == code }
}

func isGoAway(code http2.ErrCode) func(frame) bool {
	return func(f frame) bool { return f.typ == http2.FrameGoAway && f.code == code }
}

func isStatus(id uint32, status string) func(frame) bool {
	return func(f frame) bool { return f.typ == http2.FrameHeaders && f.stream == id && f.status == status }
}

// acceptAndHold accepts every stream and holds it open, unread, until
// its context ends; ctxDone tells when that happened.
func acceptAndHold(ctxDone chan<- uint32) Handle {
	return func(ctx context.Context, s *Stream) {
		s.Accept()
		<-ctx.Done()
		if ctxDone != nil {
			ctxDone <- s.id
		}
	}
}

// TestServerStreamWindowOverrun: a client that sends more than the stream
// window without waiting for updates has the stream reset
// (FLOW_CONTROL_ERROR); the connection goes on.
func TestServerStreamWindowOverrun(t *testing.T) {
	c, _ := pipeServer(t, acceptAndHold(nil))
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.await("200", isStatus(1, "200"))
	chunk := make([]byte, maxFrame)
	for range streamWindow / maxFrame {
		hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, false, chunk) })
	}
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("x")) })
	if _, ok := hc.await("RST_STREAM", isRST(1, http2.ErrCodeFlowControl)); !ok {
		t.Fatal("connection ended, want stream 1 reset with FLOW_CONTROL_ERROR")
	}
	// The discarded bytes went back to the connection window, and the
	// connection serves the next stream.
	hc.connect(3, "10.0.0.2:80")
	hc.await("200 on stream 3", isStatus(3, "200"))
}

// TestServerConnWindowOverrun: more than the connection window ends the
// connection with GOAWAY FLOW_CONTROL_ERROR.
func TestServerConnWindowOverrun(t *testing.T) {
	c, done := pipeServer(t, func(ctx context.Context, s *Stream) {
		s.Accept()
		<-ctx.Done()
	})
	hc := newH2Client(t, c)
	chunk := make([]byte, maxFrame)
	// Four streams fill their windows: the connection window, 16 MiB.
	for id := uint32(1); id <= 9; id += 2 {
		hc.connect(id, "10.0.0.2:80")
		hc.await("200", isStatus(id, "200"))
	}
	for id := uint32(1); id <= 7; id += 2 {
		for range streamWindow / maxFrame {
			hc.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, chunk) })
		}
	}
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(9, false, []byte("x")) })
	if _, ok := hc.await("GOAWAY", isGoAway(http2.ErrCodeFlowControl)); !ok {
		t.Fatal("connection ended without GOAWAY FLOW_CONTROL_ERROR")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection still served after GOAWAY")
	}
}

// TestServerRefusesStreamsAboveLimit: the stream beyond
// maxConcurrentStreams is refused (REFUSED_STREAM, safe to retry), and
// once a stream ends a new one is served.
func TestServerRefusesStreamsAboveLimit(t *testing.T) {
	c, _ := pipeServer(t, acceptAndHold(nil))
	hc := newH2Client(t, c)
	id := uint32(1)
	for range maxConcurrentStreams {
		hc.connect(id, "10.0.0.2:80")
		id += 2
	}
	last := id - 2
	hc.await("the last stream's 200", isStatus(last, "200"))
	hc.connect(id, "10.0.0.2:80")
	hc.await("REFUSED_STREAM", isRST(id, http2.ErrCodeRefusedStream))
	hc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) })
	id += 2
	hc.connect(id, "10.0.0.2:80")
	hc.await("200 once a stream ended", isStatus(id, "200"))
}

// TestServerResetEndsHandlerContext: the client's RST_STREAM ends the
// handler's context, and only that stream's.
func TestServerResetEndsHandlerContext(t *testing.T) {
	ended := make(chan uint32, 2)
	c, _ := pipeServer(t, acceptAndHold(ended))
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.connect(3, "10.0.0.2:80")
	hc.await("200", isStatus(3, "200"))
	hc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(3, http2.ErrCodeCancel) })
	select {
	case id := <-ended:
		if id != 3 {
			t.Fatalf("stream %d's context ended, want 3's", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context still live after RST_STREAM")
	}
	c.Close() // the connection going away ends the other
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("handler context still live after the connection closed")
	}
}

// TestServerProtocolErrorEndsConnection: DATA on a stream the client never
// opened is a connection error: GOAWAY PROTOCOL_ERROR, and the handlers
// of its streams end.
func TestServerProtocolErrorEndsConnection(t *testing.T) {
	ended := make(chan uint32, 1)
	c, done := pipeServer(t, acceptAndHold(ended))
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.await("200", isStatus(1, "200"))
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(5, false, []byte("x")) })
	if _, ok := hc.await("GOAWAY", isGoAway(http2.ErrCodeProtocol)); !ok {
		t.Fatal("connection ended without GOAWAY PROTOCOL_ERROR")
	}
	<-ended
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection still served after GOAWAY")
	}
}

// TestServerContinuation: a request whose headers come in HEADERS and
// CONTINUATION frames is served.
func TestServerContinuation(t *testing.T) {
	reqs := make(chan *Request, 1)
	c, _ := pipeServer(t, func(ctx context.Context, s *Stream) {
		reqs <- &s.Request
		s.Accept()
	})
	hc := newH2Client(t, c)
	hc.write(func(fr *http2.Framer) error {
		hc.hbuf.Reset()
		hc.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
		hc.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.2:80"})
		hc.henc.WriteField(hpack.HeaderField{Name: "baggage", Value: "k=v"})
		b := hc.hbuf.Bytes()
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5]}); err != nil {
			return err
		}
		if err := fr.WriteContinuation(1, false, b[5:10]); err != nil {
			return err
		}
		return fr.WriteContinuation(1, true, b[10:])
	})
	hc.await("200", isStatus(1, "200"))
	if got := <-reqs; got.Authority != netip.MustParseAddrPort("10.0.0.2:80") || got.Header.Get("Baggage") != "k=v" || got.PeerID != idA {
		t.Fatalf("request %+v", got)
	}
}

// TestServerPrefaceTimeout: a client that sends nothing after the
// handshake is hung up on after prefaceTimeout.
func TestServerPrefaceTimeout(t *testing.T) {
	defer func(d time.Duration) { prefaceTimeout = d }(prefaceTimeout)
	prefaceTimeout = 100 * time.Millisecond
	c, done := pipeServer(t, acceptAndHold(nil))
	go io.Copy(io.Discard, c) // the server's SETTINGS
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("silent client still connected")
	}
}

// TestServerHalfClose: the server's CloseWrite sends END_STREAM and the
// client's data is still read; the client's END_STREAM is Read's io.EOF.
func TestServerHalfClose(t *testing.T) {
	got := make(chan string, 1)
	c, _ := pipeServer(t, func(ctx context.Context, s *Stream) {
		s.Accept()
		s.Write([]byte("bye"))
		s.CloseWrite()
		b, err := io.ReadAll(s)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	})
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.await("END_STREAM", func(f frame) bool {
		return f.typ == http2.FrameData && f.stream == 1 && f.flags.Has(http2.FlagDataEndStream)
	})
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("after ")) })
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, true, []byte("the end")) })
	select {
	case s := <-got:
		if s != "after the end" {
			t.Fatalf("server read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not read the client's end of stream")
	}
}

// FuzzServerConn feeds arbitrary frames, after a valid preface and
// SETTINGS, to a server connection whose handler echoes: it must neither
// panic nor hang once the client hangs up.
func FuzzServerConn(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, done := pipeServer(t, echoHandler)
		go io.Copy(io.Discard, c)
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		http2.NewFramer(&in, nil).WriteSettings()
		in.Write(data)
		// The server reads everything until it hangs up: a write that
		// takes longer means its reader is stuck.
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(in.Bytes())
		if errors.Is(err, os.ErrDeadlineExceeded) {
			hang("server stopped reading without hanging up")
		}
		c.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			hang("server still running 5s after the client hung up")
		}
	})
}

// hang fails a fuzz run that would otherwise hang: not with t.Fatal, whose
// cleanup would wait for the server too.
func hang(what string) {
	buf := make([]byte, 1<<20)
	panic(fmt.Sprintf("%s:\n%s", what, buf[:runtime.Stack(buf, true)]))
}

// echoHandler refuses invalid requests and echoes the rest.
func echoHandler(ctx context.Context, s *Stream) {
	if s.Invalid != nil {
		s.Refuse(s.Invalid)
		return
	}
	if s.Authority.Port() == 1 {
		s.Refuse(ErrDenied)
		return
	}
	if s.Accept() != nil {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			s.CloseWrite()
			return
		}
	}
}

// fuzzSeeds are well-formed conversations (and a few broken ones) for the
// fuzzer to start from.
func fuzzSeeds() [][]byte {
	build := func(w func(fr *http2.Framer, hdr func(fields ...string) []byte)) []byte {
		var b, hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		hdr := func(fields ...string) []byte {
			hb.Reset()
			for i := 0; i+1 < len(fields); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			return bytes.Clone(hb.Bytes())
		}
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		w(fr, hdr)
		return b.Bytes()
	}
	connect := func(auth string) []string { return []string{":method", "CONNECT", ":authority", auth} }
	return [][]byte{
		build(func(fr *http2.Framer, hdr func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect("10.0.0.2:80")...), EndHeaders: true})
			fr.WriteData(1, false, []byte("hello"))
			fr.WriteWindowUpdate(1, 1000)
			fr.WriteWindowUpdate(0, 1000)
			fr.WriteData(1, true, []byte("world"))
			fr.WritePing(false, [8]byte{1})
		}),
		build(func(fr *http2.Framer, hdr func(...string) []byte) {
			h := hdr(append(connect("[fd00::1]:443"), "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h[:3]})
			fr.WriteContinuation(1, true, h[3:])
			fr.WriteDataPadded(1, false, []byte("padded"), make([]byte, 10))
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(connect("10.0.0.2:1")...), EndHeaders: true, EndStream: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: hdr(":method", "GET", ":authority", "x:80", ":scheme", "https", ":path", "/"), EndHeaders: true, EndStream: true})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
			fr.WriteGoAway(5, http2.ErrCodeNo, nil)
		}),
		build(func(fr *http2.Framer, hdr func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect("10.0.0.2:80")...), EndHeaders: true})
			fr.WriteData(1, false, make([]byte, 16384))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr("trailer-x", "1"), EndHeaders: true, EndStream: true})
			fr.WriteData(1, false, []byte("after end"))
			fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 7})
			fr.WriteRawFrame(0x20, 0, 0, []byte("unknown"))
			fr.WriteData(7, false, []byte("idle"))
		}),
		build(func(fr *http2.Framer, hdr func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: hdr(connect("10.0.0.2:80")...), EndHeaders: true})
		}),
		build(func(fr *http2.Framer, hdr func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect("10.0.0.2:80")...), EndHeaders: true})
			fr.WriteWindowUpdate(1, 1<<31-1)
			fr.WriteWindowUpdate(1, 0)
			fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: hdr(":method", "GET"), EndHeaders: true})
		}),
	}
}

// TestServerIdleGoAway: a connection without streams for
// serverIdleTimeout gets a GOAWAY and is closed.
func TestServerIdleGoAway(t *testing.T) {
	defer func(d time.Duration) { serverIdleTimeout = d }(serverIdleTimeout)
	serverIdleTimeout = 100 * time.Millisecond
	c, done := pipeServer(t, echoHandler)
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, true, []byte("x")) })
	// Not while a stream is open: the GOAWAY comes after the stream ended.
	hc.await("the echo's END_STREAM", func(f frame) bool {
		return f.typ == http2.FrameData && f.stream == 1 && f.flags.Has(http2.FlagDataEndStream)
	})
	if _, ok := hc.await("GOAWAY", isGoAway(http2.ErrCodeNo)); !ok {
		t.Fatal("idle connection closed without GOAWAY")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection still open after its GOAWAY")
	}
}

// TestServerHandlerPanic: a handler's panic resets its stream
// (INTERNAL_ERROR) and the connection goes on.
func TestServerHandlerPanic(t *testing.T) {
	c, _ := pipeServer(t, func(ctx context.Context, s *Stream) {
		if s.Authority.Port() == 666 {
			panic("handler bug")
		}
		echoHandler(ctx, s)
	})
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:666")
	hc.await("INTERNAL_ERROR", isRST(1, http2.ErrCodeInternal))
	hc.connect(3, "10.0.0.2:80")
	hc.await("200 after the panic", isStatus(3, "200"))
}

// TestServerDrainedIsNotMalformed: a connection closed for being idle
// is not reported as one that sent no CONNECT.
func TestServerDrainedIsNotMalformed(t *testing.T) {
	defer func(d time.Duration) { serverIdleTimeout = d }(serverIdleTimeout)
	serverIdleTimeout = 50 * time.Millisecond
	srv := NewServer(ServerOptions{Logger: quietLogger()})
	a, b := net.Pipe()
	defer b.Close()
	type result struct {
		served int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		sc := &serverConn{log: srv.log, hard: a}
		served, err := sc.serve(context.Background(), a, peer{id: idA}, echoHandler)
		done <- result{served, err}
	}()
	newH2Client(t, b)
	select {
	case r := <-done:
		if r.served != 0 || !errors.Is(r.err, errDrained) {
			t.Fatalf("served %d, err %v; want 0 and drained", r.served, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

// TestServerStreamReadDeadline: a Read waiting for the client returns a
// net.Error that times out once the read deadline passes (set ahead, or
// in the past to abort it, as net/http's server does before a hijack);
// queued data is still read, and a cleared deadline waits again.
func TestServerStreamReadDeadline(t *testing.T) {
	results := make(chan error, 4)
	c, _ := pipeServer(t, func(ctx context.Context, s *Stream) {
		if err := s.Accept(); err != nil {
			results <- err
			return
		}
		buf := make([]byte, 8)
		s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := s.Read(buf) // nothing sent: the deadline ends it
		results <- err
		s.SetReadDeadline(time.Time{})
		read := make(chan error, 1)
		go func() {
			_, err := s.Read(buf) // nothing sent: waits until aborted
			read <- err
		}()
		select {
		case err := <-read:
			results <- fmt.Errorf("read without a deadline returned %v", err)
			return
		case <-time.After(50 * time.Millisecond):
		}
		s.SetReadDeadline(time.Unix(1, 0))
		results <- <-read
		s.SetReadDeadline(time.Time{})
		n, err := s.Read(buf)
		if err == nil && string(buf[:n]) != "data" {
			err = fmt.Errorf("read %q", buf[:n])
		}
		results <- err
		<-ctx.Done()
	})
	hc := newH2Client(t, c)
	hc.connect(1, "10.0.0.2:80")
	hc.await("200", isStatus(1, "200"))
	for i, what := range []string{"deadline ahead", "deadline in the past"} {
		err := <-results
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read %d (%s): %v, want a timeout net.Error", i, what, err)
		}
	}
	hc.write(func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("data")) })
	if err := <-results; err != nil {
		t.Fatalf("read after the deadline was cleared: %v", err)
	}
}

// TestServerDrainDuringHandshake: Drain reaching a connection still in its
// handshake (a ztunnel handing its pods over), or one accepted but not yet
// served, does not cut it: it starts,
// and GOAWAY follows its preface, so the client's first CONNECT is refused
// unprocessed (the client sends it again elsewhere) instead of the
// connection failing.
func TestServerDrainDuringHandshake(t *testing.T) {
	srv := NewServer(ServerOptions{Logger: quietLogger()})
	a, b := net.Pipe()
	defer b.Close()
	sc := &serverConn{log: srv.log, hard: a}
	if !srv.track(sc) {
		t.Fatal("server closed")
	}
	srv.Drain() // before HTTP/2 started on sc
	// One accepted before the drain but served only after it is served
	// the same way, not refused.
	late := &serverConn{log: srv.log, hard: a}
	if !srv.track(late) || !late.drainOnStart {
		t.Error("a connection served after Drain is refused, or not drained once started")
	}
	srv.untrack(late)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.untrack(sc)
		srv.serve(context.Background(), sc, a, peer{id: idA}, echoHandler)
	}()
	hc := newH2Client(t, b)
	g, ok := hc.await("GOAWAY", isGoAway(http2.ErrCodeNo))
	if !ok {
		t.Fatal("connection closed without a GOAWAY")
	}
	if g.last != 0 {
		t.Errorf("GOAWAY last stream %d, want 0: the client's first CONNECT is not processed and may be sent again", g.last)
	}
	// The client's first CONNECT crosses the GOAWAY: the drained
	// connection lingers to read and refuse it rather than close with it
	// unread (a reset that can destroy the GOAWAY on its way).
	hc.connect(1, "10.0.0.2:80")
	hc.await("the CONNECT refused", isRST(1, http2.ErrCodeRefusedStream))
	b.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("drained connection not closed")
	}
}
