package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// TestPushKeepsOrderAndCounts relays both ends of a stream to sockets, as
// ztunnel does on both nodes, with readers that are slow at first (the
// sockets fill, so pushes are partial and data queues behind them) and
// then fast (pushes go through): every byte arrives once and in order both
// ways, the relays count every byte, and both readers did push.
func TestPushKeepsOrderAndCounts(t *testing.T) {
	t.Run("sockets", func(t *testing.T) { testPush(t, false) })
	// The client's relay pausing before each write it makes (an
	// authorize.Guard-like wrapper that the reader pushes past): data the
	// relay read must reach the socket before anything pushed after it.
	t.Run("slow relay writes", func(t *testing.T) { testPush(t, true) })
}

func testPush(t *testing.T, slow bool) {
	const size = 8 << 20
	var pushedServer int64
	e := newEnv(t, dialUpstream, ClientOptions{})
	var mu sync.Mutex
	e.ended = func(s *Stream) {
		s.mu.Lock()
		defer s.mu.Unlock()
		mu.Lock()
		pushedServer = s.push.pushed
		mu.Unlock()
	}
	up := upstream(t, func(c *net.TCPConn) { slowThenFast(c, c); c.CloseWrite() }) // echo

	// The app's socket and the tunnel's end of it.
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	down, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	// Small buffers: the slow start fills them, so pushes fall back to
	// the queue and the relay.
	app.SetReadBuffer(16 << 10)
	down.SetWriteBuffer(16 << 10)
	stream := e.dial(e.target(idA, up))
	cs := stream.(*clientStream)
	type joined struct{ sent, received int64 }
	done := make(chan joined, 1)
	go func() {
		var d net.Conn = down
		if slow {
			d = slowWriter{down}
		}
		s, r, _ := relay.Join(d, stream)
		done <- joined{s, r}
	}()

	payload := make([]byte, size)
	rand.Read(payload)
	go func() {
		app.Write(payload)
		app.CloseWrite()
	}()
	var got bytes.Buffer
	slowThenFast(&got, app)
	if got.Len() != size || sha256.Sum256(got.Bytes()) != sha256.Sum256(payload) {
		t.Fatalf("echo: got %d bytes, want the %d sent, in order", got.Len(), size)
	}
	var j joined
	select {
	case j = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("client relay did not end")
	}
	if j.sent != size || j.received != size {
		t.Errorf("client relay counted %d sent, %d received, want %d each", j.sent, j.received, size)
	}
	waitFor(t, "the server's stream to end", func() bool { return len(e.results()) == 1 })
	if r := e.results()[0]; r.BytesIn != size || r.BytesOut != size {
		t.Errorf("server relay counted %d in, %d out, want %d each", r.BytesIn, r.BytesOut, size)
	}
	cs.mu.Lock()
	pushedClient := cs.push.pushed
	cs.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if pushedClient == 0 || pushedServer == 0 {
		t.Errorf("pushed by the client's reader %d, by the server's %d bytes: want both > 0", pushedClient, pushedServer)
	}
	t.Logf("pushed: client %d, server %d of %d bytes", pushedClient, pushedServer, size)
}

// slowThenFast copies src to dst, reading little and pausing for the first
// 64 KiB (the sender's socket fills up), then at full speed.
func slowThenFast(dst io.Writer, src io.Reader) {
	buf := make([]byte, 64<<10)
	n := 0
	for n < 64<<10 {
		k, err := src.Read(buf[:1024])
		dst.Write(buf[:k])
		n += k
		if err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	io.CopyBuffer(dst, src, buf)
}

// slowWriter pauses before each write; pushes go to its socket directly
// (relay.Explainer).
type slowWriter struct{ *net.TCPConn }

func (w slowWriter) Write(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return w.TCPConn.Write(p)
}

func (w slowWriter) Unguarded() net.Conn { return w.TCPConn }
