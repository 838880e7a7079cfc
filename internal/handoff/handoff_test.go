package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/fdpass"
)

func pod(uid string, cookie uint64) Pod {
	return Pod{UID: uid, Name: "pod-" + uid, Namespace: "ns", NetnsCookie: cookie,
		IPs: []netip.Addr{netip.MustParseAddr("198.18.0.10")}}
}

func addEvent(uid string, f *os.File, cookie uint64) string {
	return fmt.Sprintf("add %s ino=%d cookie=%d", uid, inode(f), cookie)
}

func TestSnapshotOnConnect(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	self, other := selfNetns(t), newNetns(t)
	if inode(self) == inode(other) {
		t.Fatal("throwaway netns has the same inode as ours")
	}
	s.Upsert(pod("b", 2), other)
	s.Upsert(pod("a", 1), self)
	if s.Connected() {
		t.Fatal("Connected before any client")
	}
	h := &recHandler{}
	startClient(t, path, h, log)
	h.waitEvents(t, addEvent("a", self, 1), addEvent("b", other, 2), "snapshot-end a,b")
	if !s.Connected() {
		t.Fatal("not Connected with a client")
	}
}

func TestIncrementalAddDel(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	h := &recHandler{}
	startClient(t, path, h, log)
	h.waitEvents(t, "snapshot-end ")
	ns := selfNetns(t)
	s.Upsert(pod("c", 3), ns)
	s.Upsert(pod("c", 4), ns) // replaces
	s.Remove("c")
	// Remove waits for the ack, so ztunnel has seen the del already.
	if got := h.snapshot(); len(got) != 4 || got[3] != "del c" {
		t.Fatalf("after Remove returned, handler saw %q", got)
	}
	h.waitEvents(t, "snapshot-end ", addEvent("c", ns, 3), addEvent("c", ns, 4), "del c")
	s.Remove("never-added") // ignored
	s.Upsert(pod("d", 5), ns)
	h.waitEvents(t, "snapshot-end ", addEvent("c", ns, 3), addEvent("c", ns, 4), "del c", addEvent("d", ns, 5))
}

func TestReconnectGetsFullSnapshot(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	h1 := &recHandler{}
	stop1 := startClient(t, path, h1, log)
	h1.waitEvents(t, "snapshot-end ")
	s.Upsert(pod("a", 1), ns)
	s.Upsert(pod("b", 2), ns)
	s.Remove("b")
	h1.waitEvents(t, "snapshot-end ", addEvent("a", ns, 1), addEvent("b", ns, 2), "del b")
	stop1()
	waitFor(t, "server to notice the disconnect", func() bool { return !s.Connected() })
	s.Upsert(pod("c", 3), ns) // while nobody is connected
	h2 := &recHandler{}
	startClient(t, path, h2, log)
	h2.waitEvents(t, addEvent("a", ns, 1), addEvent("c", ns, 3), "snapshot-end a,c")
}

func TestNewConnectionReplacesOld(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	s.Upsert(pod("a", 1), selfNetns(t))
	old := dialRaw(t, path)
	if _, err := fdpass.Read(old, maxMessageSize); err != nil { // first add, never acked
		t.Fatal(err)
	}
	h := &recHandler{}
	startClient(t, path, h, log)
	h.waitEvents(t, addEvent("a", selfNetns(t), 1), "snapshot-end a")
	expectClosed(t, old)
}

func TestHandlerErrorIsAckedAndLogged(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	h := &recHandler{addErr: errors.New("no room for listeners")}
	startClient(t, path, h, log)
	h.waitEvents(t, "snapshot-end ")
	ns := selfNetns(t)
	s.Upsert(pod("a", 1), ns)
	s.Upsert(pod("b", 2), ns)
	h.waitEvents(t, "snapshot-end ", addEvent("a", ns, 1), addEvent("b", ns, 2))
	waitFor(t, "server to log the rejection", func() bool {
		return strings.Count(logs.String(), `msg="ztunnel rejected message" client=ztunnel conn=1 type=add`) == 2 &&
			strings.Contains(logs.String(), `err="no room for listeners"`)
	})
	if !s.Connected() {
		t.Fatal("an error ack dropped the client")
	}
}

// TestUpsertGated: a gated add reaches the current ztunnel marked as gated
// and its wait returns only once ztunnel acknowledged it, with
// ztunnel's error; without a ztunnel it fails at once and the pod goes,
// ungated, into the next ztunnel's snapshot.
func TestUpsertGated(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	ctx := context.Background()
	if err := s.UpsertGated(pod("a", 1), ns)(ctx); !errors.Is(err, ErrNoZtunnel) {
		t.Fatalf("gated wait without ztunnel = %v, want ErrNoZtunnel", err)
	}
	h := &recHandler{addGate: make(chan struct{})}
	close(h.addGate) // the snapshot's add
	startClient(t, path, h, log)
	h.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a")

	gate := make(chan struct{})
	h.mu.Lock()
	h.addGate = gate
	h.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.UpsertGated(pod("b", 2), ns)(ctx) }()
	h.waitEvents(t, addEvent("a", ns, 1), "snapshot-end a", addEvent("b", ns, 2)+" gate")
	select {
	case err := <-done:
		t.Fatalf("gated wait returned (%v) before ztunnel's AddPod did", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("gated wait = %v after ztunnel set the pod up", err)
	}
	h.mu.Lock()
	h.addGate = nil
	h.addErr = errors.New("no certificate for the pod")
	h.mu.Unlock()
	if err := s.UpsertGated(pod("c", 3), ns)(ctx); err == nil || !strings.Contains(err.Error(), "no certificate for the pod") {
		t.Fatalf("gated wait = %v, want ztunnel's error", err)
	}
	gate = make(chan struct{})
	h.mu.Lock()
	h.addErr = nil
	h.addGate = gate
	h.mu.Unlock()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := s.UpsertGated(pod("d", 4), ns)(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("gated wait past its deadline = %v", err)
	}
	close(gate)
}

func TestGarbageClientDoesNotStopServer(t *testing.T) {
	log, logs := newLog(t)
	s, path := startServer(t, log)
	for _, junk := range [][]byte{[]byte("\x00\xffnot json"), []byte(`{"v":2,"type":"add","seq":1}`), []byte(`{"v":9}`), []byte(`{"v":2,"type":"ack","seq":99,"ok":true}`)} {
		c := dialRaw(t, path)
		if _, err := fdpass.Read(c, maxMessageSize); err != nil { // snapshot-end
			t.Fatal(err)
		}
		if err := fdpass.Write(c, junk, nil); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	}
	waitFor(t, "the wrong-seq ack to be logged", func() bool {
		return strings.Contains(logs.String(), "ack for message 99, expected 1")
	})
	// A client that never acks is dropped after the ack timeout.
	silent := dialRaw(t, path)
	expectClosed(t, silent)
	waitFor(t, "the silent client's drop to be logged", func() bool {
		return strings.Contains(logs.String(), "no ack for snapshot-end message 1")
	})
	h := &recHandler{}
	startClient(t, path, h, log)
	h.waitEvents(t, "snapshot-end ")
	s.Upsert(pod("a", 1), selfNetns(t))
	h.waitEvents(t, "snapshot-end ", addEvent("a", selfNetns(t), 1))
}

func TestRunStopsCleanly(t *testing.T) {
	before := runtime.NumGoroutine()
	log, _ := newLog(t)
	path := filepath.Join(t.TempDir(), "agentd.sock")
	s, err := Listen(path, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	s.Upsert(pod("a", 1), selfNetns(t))
	h := &recHandler{}
	stop := startClient(t, path, h, log)
	h.waitEvents(t, addEvent("a", selfNetns(t), 1), "snapshot-end a")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Run: %v", err)
	}
	s.Upsert(pod("b", 2), selfNetns(t)) // after Run: ignored, nothing kept
	if s.Connected() || len(s.pods) != 0 {
		t.Errorf("after Run: connected=%v pods=%d", s.Connected(), len(s.pods))
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestListenSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "agentd.sock")
	for range 2 { // the second Listen replaces the first one's stale socket
		s, err := Listen(path, discardLog())
		if err != nil {
			t.Fatal(err)
		}
		s.ln.SetUnlinkOnClose(false)
		s.ln.Close()
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(plain, discardLog()); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func dialRaw(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosed reads until the server hangs up on c.
func expectClosed(t *testing.T, c *net.UnixConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		p, err := fdpass.Read(c, maxMessageSize)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("want the server to close the connection, got %v", err)
		}
		p.CloseFiles()
	}
}

// countHandler counts what it is handed and keeps the last snapshot's
// UIDs.
type countHandler struct {
	mu   sync.Mutex
	adds int
	snap []string
}

func (h *countHandler) AddPod(_ Pod, f *os.File) error {
	f.Close()
	h.mu.Lock()
	h.adds++
	h.mu.Unlock()
	return nil
}
func (h *countHandler) RemovePod(string) error { return nil }
func (h *countHandler) SnapshotDone(uids []string) error {
	h.mu.Lock()
	h.snap = uids
	h.mu.Unlock()
	return nil
}
func (h *countHandler) HandOver() error { return nil }

// TestLargeSnapshot: a node with 5000 pods (UIDs as long as Kubernetes'),
// more than version 1's snapshot-end could list, is handed over whole.
func TestLargeSnapshot(t *testing.T) {
	log, _ := newLog(t)
	s, path := startServer(t, log)
	ns := selfNetns(t)
	const n = 5000
	for i := range n {
		s.Upsert(pod(fmt.Sprintf("0d1e2f3a-4b5c-6d7e-8f90-%012d", i), uint64(i+1)), ns)
	}
	h := &countHandler{}
	start := time.Now()
	startClient(t, path, h, log)
	waitFor(t, "the snapshot", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.snap) == n
	})
	t.Logf("%d pods handed over in %s", n, time.Since(start).Round(time.Millisecond))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.adds != n || !slices.IsSorted(h.snap) || h.snap[0] != fmt.Sprintf("0d1e2f3a-4b5c-6d7e-8f90-%012d", 0) {
		t.Errorf("%d adds, snapshot of %d starting %q", h.adds, len(h.snap), h.snap[0])
	}
}
