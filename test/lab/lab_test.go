package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newTestLab builds a lab without the mesh and closes it after the test.
func newTestLab(t *testing.T, nodes int) *Lab {
	t.Helper()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Nodes: nodes, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// addPod adds a pod or fails the test.
func addPod(t *testing.T, l *Lab, name string, node int) *Pod {
	t.Helper()
	p, err := l.AddPod(context.Background(), PodSpec{Name: name, Namespace: "agents", Node: node})
	if err != nil {
		t.Fatalf("add pod %s: %v", name, err)
	}
	return p
}

// startEcho runs the echo helper on :8080 in p and waits for it to listen.
func startEcho(t *testing.T, p *Pod) *Process {
	t.Helper()
	proc, err := p.Start(context.Background(), "echo", os.Args[0], "lab-helper", "echo", ":8080")
	if err != nil {
		t.Fatalf("start echo in %s: %v", p.Name, err)
	}
	return proc
}

// dial sends a payload from p to addr and checks the echo, retrying while
// the server starts.
func dial(t *testing.T, p *Pod, addr netip.AddrPort, payload string) {
	t.Helper()
	var out []byte
	var err error
	for range 50 {
		out, err = p.Run(context.Background(), os.Args[0], "lab-helper", "dial", addr.String(), payload)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s -> %s: %v", p.Name, addr, err)
	}
	if got := strings.TrimSpace(string(out)); got != payload {
		t.Fatalf("%s -> %s: echoed %q, want %q", p.Name, addr, got, payload)
	}
}

func TestPodConnectivityWithoutMesh(t *testing.T) {
	l := newTestLab(t, 2)
	a, b, c := addPod(t, l, "client", 1), addPod(t, l, "same-node", 1), addPod(t, l, "other-node", 2)
	echoB, echoC := startEcho(t, b), startEcho(t, c)
	checkInCgroup(t, echoB.PID, b.CgroupPath())
	checkInCgroup(t, echoC.PID, c.CgroupPath())

	capt, err := l.Capture(context.Background())
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	defer capt.Stop()
	cases := []struct {
		name   string
		dst    netip.Addr
		marker string
	}{
		{"cross-node v4", c.IPv4(), "cross-v4-marker"},
		{"cross-node v6", c.IPv6(), "cross-v6-marker"},
		{"same-node v4", b.IPv4(), "same-v4-marker"},
		{"same-node v6", b.IPv6(), "same-v6-marker"},
	}
	for _, tc := range cases {
		dial(t, a, netip.AddrPortFrom(tc.dst, 8080), tc.marker)
	}
	segs, err := capt.Stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	for _, tc := range cases {
		flows := FlowsContaining(segs, []byte(tc.marker))
		crossNode := strings.HasPrefix(tc.name, "cross")
		if crossNode != (len(flows) > 0) {
			t.Errorf("%s: marker seen on the wire in flows %v, want seen=%v", tc.name, flows, crossNode)
		}
		for _, f := range flows {
			if f.Dst.Addr() != tc.dst && f.Src.Addr() != tc.dst {
				t.Errorf("%s: flow %v does not involve %v", tc.name, f, tc.dst)
			}
		}
	}
	if DstPorts(segs)[8080] == 0 {
		t.Errorf("no segment to port 8080 captured; ports seen: %v", DstPorts(segs))
	}
}

// checkInCgroup asserts pid runs in the cgroup dir.
func checkInCgroup(t *testing.T, pid int, dir string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroup of %d: %v", pid, err)
	}
	root, _ := CgroupRoot()
	want := "0::" + strings.TrimPrefix(dir, root)
	if !strings.Contains(string(b), want+"\n") {
		t.Errorf("pid %d cgroups:\n%s\nwant line %q", pid, b, want)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	l := newTestLab(t, 2)
	p := addPod(t, l, "worker", 2)
	proc := startEcho(t, p)
	left, err := Leftovers(l.ID())
	if err != nil {
		t.Fatalf("leftovers: %v", err)
	}
	for _, want := range []string{p.NetnsPath(), l.StateDir(), filepath.Dir(l.nodeCgroup(1))} {
		if !slices.Contains(left, want) {
			t.Errorf("Leftovers before Close = %v, missing %s", left, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	select {
	case <-proc.Done():
	default:
		t.Errorf("pod process %d still running after Close", proc.PID)
	}
	checkGone(t, l.ID())
}

func TestDownCleansAbandonedLab(t *testing.T) {
	l := newTestLab(t, 2)
	p := addPod(t, l, "orphan", 1)
	proc := startEcho(t, p)
	if ids, err := leftoverIDs(); err != nil || !slices.Contains(ids, l.ID()) {
		t.Fatalf("Down would not find %s among %v (%v)", l.ID(), ids, err)
	}
	// Simulate a crash: nothing of l is closed; only Down's records remain.
	if err := DownLab(nil, l.ID()); err != nil {
		t.Fatalf("down: %v", err)
	}
	select {
	case <-proc.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("pod process %d survived Down", proc.PID)
	}
	checkGone(t, l.ID())
	ids, err := leftoverIDs()
	if err != nil {
		t.Fatalf("leftover ids: %v", err)
	}
	for _, id := range ids {
		if id == l.ID() {
			t.Errorf("Down left %s behind", id)
		}
	}
}

// checkGone asserts nothing named after id remains.
func checkGone(t *testing.T, id string) {
	t.Helper()
	left, err := Leftovers(id)
	if err != nil || len(left) > 0 {
		t.Errorf("left behind by %s: %v (%v)", id, left, err)
	}
}

func TestNewFailsCleanlyWhenAgentdDies(t *testing.T) {
	requireLab(t)
	bin := t.TempDir()
	script := "#!/bin/sh\necho \"boom: cannot load programs\" >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(bin, "agentd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, Options{Nodes: 1, BinDir: bin, StartMesh: true, ReadyTimeout: 5 * time.Second})
	if err == nil {
		l.Close()
		t.Fatal("New succeeded with a failing agentd")
	}
	for _, want := range []string{"n1 agentd not ready", "boom: cannot load programs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	_, rest, _ := strings.Cut(err.Error(), StateRoot+"/")
	id := labID(rest[:min(len(rest), len(Prefix)+6)])
	if id == "" {
		t.Fatalf("no lab id in error %q", err)
	}
	checkGone(t, id)
}
