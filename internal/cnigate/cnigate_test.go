package cnigate

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func serve(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gate", "cni.sock")
	s, err := Listen(path, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return path
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestCall: the request and the open netns reach the handler (the same
// namespace file, not a path), and its reply comes back.
func TestCall(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	want := Request{ContainerID: "c1", Netns: "/var/run/netns/cni-1", Namespace: "team", Name: "agent", UID: "u1",
		IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}}
	type seen struct {
		req Request
		ino uint64
	}
	seenc := make(chan seen, 1)
	path := serve(t, func(_ context.Context, req Request, f *os.File) Reply {
		seenc <- seen{req, inode(t, f)}
		return Reply{Captured: true}
	})
	r, err := Call(context.Background(), path, want, ns)
	if err != nil {
		t.Fatal(err)
	}
	s := <-seenc
	got, gotIno := s.req, s.ino
	if !r.Captured || r.Err != "" {
		t.Errorf("reply %+v, want captured", r)
	}
	if got.UID != want.UID || got.Netns != want.Netns || got.ContainerID != want.ContainerID || len(got.IPs) != 2 || got.IPs[1] != want.IPs[1] {
		t.Errorf("handler got %+v, want %+v", got, want)
	}
	if gotIno != inode(t, ns) {
		t.Errorf("handler got netns inode %d, want %d", gotIno, inode(t, ns))
	}
}

// TestBadRequests: a request without the pod's names or without the netns
// gets an error reply and never reaches the handler; the server keeps
// serving.
func TestBadRequests(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var called atomic.Int32
	path := serve(t, func(context.Context, Request, *os.File) Reply { called.Add(1); return Reply{Captured: true} })
	r, err := Call(context.Background(), path, Request{UID: "u", Name: "agent"}, ns)
	if err != nil || !strings.Contains(r.Err, "K8S_POD_NAMESPACE") {
		t.Errorf("no namespace: reply %+v, %v; want an error naming K8S_POD_NAMESPACE", r, err)
	}
	r, err = Call(context.Background(), path, Request{UID: "u", Name: "agent", Namespace: "team"}, nil)
	if err != nil || !strings.Contains(r.Err, "got 0 files") {
		t.Errorf("no netns: reply %+v, %v; want an error", r, err)
	}
	if n := called.Load(); n != 0 {
		t.Errorf("handler called %d times for bad requests", n)
	}
	if r, err := Call(context.Background(), path, Request{UID: "u", Name: "agent", Namespace: "team"}, ns); err != nil || !r.Captured {
		t.Errorf("good request after bad ones: %+v, %v", r, err)
	}
}

// TestCallTimeout: a handler that never answers in time ends the call at
// its deadline with the context's error; no agentd is an error too.
func TestCallTimeout(t *testing.T) {
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	path := serve(t, func(ctx context.Context, _ Request, _ *os.File) Reply {
		<-ctx.Done()
		return Reply{Err: "stopped"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Call(ctx, path, Request{UID: "u", Name: "a", Namespace: "n"}, ns); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call past its deadline = %v, want DeadlineExceeded", err)
	}
	if _, err := Call(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{}, ns); err == nil {
		t.Error("Call without a server succeeded")
	}
}
