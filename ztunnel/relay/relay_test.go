package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// wrapped hides the TCP type (no splice) but forwards SyscallConn, as
// ztunnel's tracked upstreams do: Copy then waits for readability.
type wrapped struct {
	*net.TCPConn
	reads atomic.Int32 // Read calls
}

func (w *wrapped) Read(p []byte) (int, error) { w.reads.Add(1); return w.TCPConn.Read(p) }

// opaque hides everything but net.Conn: Copy reads with a buffer.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(*net.TCPConn).CloseWrite() }

// paths are the three ways Copy can move bytes, by how the proxy's two
// inner conns look.
var paths = []struct {
	name string
	wrap func(*net.TCPConn) net.Conn
}{
	{"splice", func(c *net.TCPConn) net.Conn { return c }},
	{"socket", func(c *net.TCPConn) net.Conn { return &wrapped{TCPConn: c} }},
	{"buffered", func(c *net.TCPConn) net.Conn { return opaque{c} }},
}

func TestJoinHalfClose(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			app, down := tcpPair(t)   // app -> proxy
			up, backend := tcpPair(t) // proxy -> backend
			type result struct {
				sent, recv int64
				err        error
			}
			done := make(chan result, 1)
			go func() {
				s, r, err := Join(p.wrap(down), p.wrap(up))
				done <- result{s, r, err}
			}()
			app.Write([]byte("request"))
			app.CloseWrite()
			backend.SetDeadline(time.Now().Add(5 * time.Second))
			req, err := io.ReadAll(backend) // EOF only if Join half-closed up
			if err != nil || string(req) != "request" {
				t.Fatalf("backend read %q, %v", req, err)
			}
			// The backend can still answer after the client's half-close.
			resp := bytes.Repeat([]byte("0123456789"), 100000)
			go func() { backend.Write(resp); backend.Close() }()
			app.SetDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(app)
			if err != nil || !bytes.Equal(got, resp) {
				t.Fatalf("app read %d bytes (equal %v), %v", len(got), bytes.Equal(got, resp), err)
			}
			select {
			case r := <-done:
				if r.sent != 7 || r.recv != int64(len(resp)) || r.err != nil {
					t.Errorf("Join = %d, %d, %v; want 7, %d, nil", r.sent, r.recv, r.err, len(resp))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Join did not return after both sides finished")
			}
		})
	}
}

func TestJoinResetUnblocksOtherSide(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			app, down := tcpPair(t)
			up, backend := tcpPair(t)
			done := make(chan error, 1)
			go func() { _, _, err := Join(p.wrap(down), p.wrap(up)); done <- err }()
			backend.SetLinger(0)
			backend.Close() // RST toward the proxy while the app stays silent
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Join hung after the upstream reset")
			}
			app.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := app.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("app conn not closed after upstream reset: %v", err)
			}
		})
	}
}

func TestJoinEchoesManyMessages(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			app, down := tcpPair(t)
			up, backend := tcpPair(t)
			go Join(p.wrap(down), p.wrap(up))
			go io.Copy(backend, backend)
			app.SetDeadline(time.Now().Add(10 * time.Second))
			for _, size := range []int{1, 100, 1 << 10, 40 << 10, 1 << 20, 3} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				go app.Write(msg)
				got := make([]byte, size)
				if _, err := io.ReadFull(app, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("echo of %d bytes: %v (equal %v)", size, err, bytes.Equal(got, msg))
				}
			}
		})
	}
}

// fdCount counts this process's open fds.
func fdCount(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestIdleSpliceHoldsNoPipes: idle socket-to-socket connections hold no
// pipe fds (io.Copy would hold two pipes per connection), and after a
// burst of traffic at most maxIdlePipes stay for reuse.
func TestIdleSpliceHoldsNoPipes(t *testing.T) {
	const conns = 50
	type leg struct{ app, down, up, backend *net.TCPConn }
	var legs []leg
	for range conns {
		app, down := tcpPair(t)
		up, backend := tcpPair(t)
		legs = append(legs, leg{app, down, up, backend})
	}
	base := fdCount(t) - 2*pipes.idle() // the sockets and the runtime's own
	for _, l := range legs {
		go Join(l.down, l.up)
	}
	time.Sleep(100 * time.Millisecond) // let every copy reach its wait
	if idle := fdCount(t) - 2*pipes.idle(); idle != base {
		t.Fatalf("%d idle joined connections hold %d fds beyond their sockets", conns, idle-base)
	}
	for _, l := range legs {
		go l.app.Write([]byte("ping"))
	}
	for _, l := range legs {
		l.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(l.backend, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the copies are back in their wait
	after := fdCount(t)
	if idle := pipes.idle(); idle > maxIdlePipes || after-base != 2*idle {
		t.Errorf("after the traffic: %d fds beyond the sockets, %d pooled pipes (at most %d kept)", after-base, idle, maxIdlePipes)
	}
	t.Logf("%d idle spliced connections: %d fds; after traffic on all at once %d (%d pooled pipes)", conns, base, after, pipes.idle())
}

// TestSocketCopyReadsOnlyWhenReadable: a socket source is not read (so no
// buffer is lent to a blocked Read) until it has data.
func TestSocketCopyReadsOnlyWhenReadable(t *testing.T) {
	app, down := tcpPair(t)
	up, backend := tcpPair(t)
	src := &wrapped{TCPConn: down}
	done := make(chan struct{})
	go func() { Copy(opaque{up}, src); close(done) }()
	time.Sleep(50 * time.Millisecond) // idle: the copy must not sit in Read
	if src.reads.Load() != 0 {
		t.Fatalf("idle socket read %d times before any data", src.reads.Load())
	}
	app.Write([]byte("hello"))
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(backend, got); err != nil || string(got) != "hello" {
		t.Fatalf("backend got %q, %v", got, err)
	}
	app.Close()
	<-done
	if n := src.reads.Load(); n != 2 { // the data, then the end of stream
		t.Errorf("source read %d times, want 2 (data, EOF)", n)
	}
}

// sizedReader returns reads of the given sizes (capped by the buffer) and
// records how big a buffer each read was offered.
type sizedReader struct {
	sizes   []int
	offered []int
}

func (r *sizedReader) Read(p []byte) (int, error) {
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	r.offered = append(r.offered, len(p))
	n := min(r.sizes[0], len(p))
	r.sizes = r.sizes[1:]
	for i := range n {
		p[i] = byte(i)
	}
	return n, nil
}

func TestCopyBufferFollowsTraffic(t *testing.T) {
	s, m, l := sizes[0], sizes[1], sizes[2]
	r := &sizedReader{sizes: []int{100, s, m, l, l, 5000, 100}}
	var dst bytes.Buffer
	n, err := Copy(&dst, r)
	if err != nil || n != int64(dst.Len()) || n != int64(100+s+m+2*l+5000+100) {
		t.Fatalf("copied %d (%d in dst), %v", n, dst.Len(), err)
	}
	want := []int{s, s, m, l, l, l, s}
	if !slices.Equal(r.offered, want) {
		t.Errorf("buffers offered %v, want %v", r.offered, want)
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, syscall.EPIPE }

func TestCopyWriteError(t *testing.T) {
	_, err := Copy(failWriter{}, &sizedReader{sizes: []int{10}})
	if !errors.Is(err, syscall.EPIPE) {
		t.Errorf("err %v, want the write error", err)
	}
}

// readySource is a stream whose Read is only called after WaitReadable.
type readySource struct {
	data  chan []byte
	reads int
	early bool // Read called while nothing was ready
	ready bool
	pend  []byte
}

func (r *readySource) WaitReadable() error {
	if b, ok := <-r.data; ok {
		r.pend = b
	}
	r.ready = true
	return nil
}

func (r *readySource) Read(p []byte) (int, error) {
	r.reads++
	if !r.ready {
		r.early = true
	}
	r.ready = false
	if r.pend == nil {
		return 0, io.EOF
	}
	n := copy(p, r.pend)
	r.pend = nil
	return n, nil
}

// TestReadyWaiterReadsOnlyWhenReadable: a source that can say when it has
// data (an HBONE stream) is not lent a buffer until then.
func TestReadyWaiterReadsOnlyWhenReadable(t *testing.T) {
	src := &readySource{data: make(chan []byte)}
	var dst bytes.Buffer
	done := make(chan struct{})
	go func() { Copy(&dst, src); close(done) }()
	src.data <- []byte("hello")
	src.data <- []byte(" world")
	close(src.data)
	<-done
	if src.early || dst.String() != "hello world" || src.reads != 3 {
		t.Errorf("read before ready %v, %d reads, copied %q", src.early, src.reads, dst.String())
	}
}

// TestSpliceVetoCopies: a vetoed source is copied, not spliced (no pipe is
// taken), and the veto is asked about the source.
func TestSpliceVetoCopies(t *testing.T) {
	app, down := tcpPair(t)
	up, backend := tcpPair(t)
	var asked atomic.Int32
	SetSpliceVeto(func(src *net.TCPConn) bool {
		if src == down {
			asked.Add(1)
		}
		return true
	})
	t.Cleanup(func() { SetSpliceVeto(nil) })
	before := pipes.idle()
	done := make(chan error, 1)
	go func() { _, err := Copy(up, down); done <- err }()
	msg := bytes.Repeat([]byte("x"), 1<<20)
	go func() { app.Write(msg); app.CloseWrite() }()
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(backend, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 1 || pipes.idle() != before {
		t.Errorf("veto asked %d times, pooled pipes %d -> %d; want asked once, no pipe", asked.Load(), before, pipes.idle())
	}
}
