package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLabRestartsKilledDaemons: a ztunnel and an agentd killed with
// SIGKILL come back by themselves, are in the pids file, and the
// restarted ztunnel carries traffic over mTLS. A kill just before Close
// leaves nothing behind.
func TestLabRestartsKilledDaemons(t *testing.T) {
	l := newMeshLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := l.AddPod(ctx, PodSpec{Name: "client", Namespace: "agents", ServiceAccount: "client", Node: 1, Enrolled: true})
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.AddPod(ctx, PodSpec{Name: "server", Namespace: "agents", ServiceAccount: "server", Node: 2, Enrolled: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.Start(ctx, "echo", l.Bin("meshlab"), "app", "echo", "--listen", ":8080"); err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(server.IPv4(), 8080)
	send(t, l, client, to, "before")

	for _, name := range []string{ZtunnelName(1), AgentdName(2)} {
		old := l.PID(name)
		killed := time.Now()
		killPID(t, old)
		p, err := l.WaitRestarted(ctx, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: pid %d killed, pid %d ready after %s", name, old, p.PID, time.Since(killed).Round(time.Millisecond))
		if p.PID == old || l.PID(name) != p.PID || l.Restarts(name) != 1 {
			t.Errorf("%s: killed %d, restarted %d, current %d, restarts %d", name, old, p.PID, l.PID(name), l.Restarts(name))
		}
		if line := fmt.Sprintf("%d ", p.PID); !pidsFileHas(t, l, line, name) {
			t.Errorf("%s: pid %d is not in the pids file", name, p.PID)
		}
		since := time.Now()
		send(t, l, client, to, "after-"+name)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = l.WaitAccessLog(wctx, 1, func(a AccessLog) bool {
			return a.Direction == "outbound" && a.Dst() == to && a.MTLS && !a.Time.Before(since.Add(-time.Second))
		})
		wcancel()
		if err != nil {
			t.Errorf("after the restart of %s: no mTLS access log on n1: %v", name, err)
		}
	}

	// Close right after the lab saw a crash: the restart is pending (or,
	// on a slow machine, in flight or done).
	killPID(t, l.PID(ZtunnelName(2)))
	waitSupervisor(t, l.sup, "the crash is seen", func() bool { return l.sup.units[ZtunnelName(2)].exits > 0 })
	if err := l.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if left := processesOf(t, l.opts.BinDir); len(left) > 0 {
		t.Errorf("processes of %s still run after Close: %v", l.opts.BinDir, left)
	}
}

// pidsFileHas reports whether a line of l's pids file starts with prefix
// and ends with name.
func pidsFileHas(t *testing.T, l *Lab, prefix, name string) bool {
	t.Helper()
	b, err := os.ReadFile(l.pids.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) && strings.HasSuffix(line, " "+name) {
			return true
		}
	}
	return false
}

// processesOf lists the pids whose executable is in dir.
func processesOf(t *testing.T, dir string) []string {
	t.Helper()
	exes, err := filepath.Glob("/proc/[0-9]*/exe")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range exes {
		if target, err := os.Readlink(e); err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, strings.Split(e, "/")[2]+" "+target)
		}
	}
	return out
}
