package handoff

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/testutil"

	"golang.org/x/sys/unix"
)

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

type nopHandler struct{}

func (nopHandler) AddPod(_ Pod, f *os.File) error { return f.Close() }
func (nopHandler) RemovePod(string) error         { return nil }
func (nopHandler) SnapshotDone([]string) error    { return nil }
func (nopHandler) HandOver() error                { return nil }

func newLog(t *testing.T) (*slog.Logger, *testutil.LogBuffer) { return testutil.NewLog(t) }

// recHandler records what ztunnel would see, as lines like "add u1 ino=5".
type recHandler struct {
	mu          sync.Mutex
	events      []string
	addErr      error
	handOverErr error         // HandOver's result
	snapGate    chan struct{} // if set, SnapshotDone returns once it is closed
	delGate     chan struct{} // if set, RemovePod returns once it is closed
	addGate     chan struct{} // if set, AddPod returns once it is closed
}

func (h *recHandler) record(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, s)
}

func (h *recHandler) AddPod(p Pod, f *os.File) error {
	defer f.Close()
	ev := fmt.Sprintf("add %s ino=%d cookie=%d", p.UID, inode(f), p.NetnsCookie)
	if p.Gate {
		ev += " gate"
	}
	h.record(ev)
	h.mu.Lock()
	gate := h.addGate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addErr
}

func (h *recHandler) RemovePod(uid string) error {
	h.record("del " + uid)
	if h.delGate != nil {
		<-h.delGate
	}
	return nil
}

func (h *recHandler) SnapshotDone(uids []string) error {
	h.record("snapshot-end " + strings.Join(uids, ","))
	if h.snapGate != nil {
		<-h.snapGate
	}
	return nil
}

func (h *recHandler) HandOver() error {
	h.record("handover")
	return h.handOverErr
}

func (h *recHandler) snapshot() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

// waitEvents waits until the handler has seen exactly want.
func (h *recHandler) waitEvents(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = h.snapshot(); slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("handler events:\n got %q\nwant %q", got, want)
}

func inode(f *os.File) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return st.Ino
}

// startServer runs a server on a fresh socket until the test ends.
func startServer(t *testing.T, log *slog.Logger) (*Server, string) {
	t.Helper()
	return startServerAckTimeout(t, log, 500*time.Millisecond)
}

// startServerAckTimeout is startServer with the given ack timeout.
func startServerAckTimeout(t *testing.T, log *slog.Logger, ackTimeout time.Duration) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "agentd.sock")
	s, err := Listen(path, log)
	if err != nil {
		t.Fatal(err)
	}
	s.ackTimeout = ackTimeout
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, path
}

// startClient runs Connect until the returned stop is called (or the test
// ends).
func startClient(t *testing.T, path string, h Handler, log *slog.Logger) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Connect(ctx, path, h, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Connect: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// selfNetns opens the test process's own network namespace.
func selfNetns(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// newNetns creates a throwaway network namespace and returns the only
// handle to it; the namespace disappears once every copy of it is closed.
func newNetns(t *testing.T) *os.File { return testutil.NewNetns(t) }

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
