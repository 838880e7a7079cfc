package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
)

// ProcStats is a snapshot of one process's resources.
type ProcStats struct {
	RSS   int64 // resident bytes now (VmRSS)
	Peak  int64 // resident bytes at the highest so far (VmHWM)
	FDs   int   // open file descriptors
	Pipes int   // of them, pipes (ztunnel's relay keeps a few for splicing)
	Goros int   // goroutines (go_goroutines on its metrics port), -1 unknown
	// Heap and Stacks are the Go heap and goroutine stacks in use
	// (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes), -1
	// unknown.
	Heap, Stacks int64
}

func (s ProcStats) String() string {
	return fmt.Sprintf("rss %.1f MB, fds %d, goroutines %d", float64(s.RSS)/1e6, s.FDs, s.Goros)
}

// ReadProcStats reads pid's memory and fd count from /proc (Goros -1).
func ReadProcStats(pid int) (ProcStats, error) {
	st := ProcStats{Goros: -1, Heap: -1, Stacks: -1}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("read status of %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			st.RSS = kib(v)
		case "VmHWM":
			st.Peak = kib(v)
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("list fds of %d: %w", pid, err)
	}
	st.FDs = len(fds)
	for _, fd := range fds {
		if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && strings.HasPrefix(target, "pipe:") {
			st.Pipes++
		}
	}
	return st, nil
}

// kib parses "  1234 kB" into bytes.
func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}

// ZtunnelStats reads node i's ztunnel's resources, goroutines from its
// metrics endpoint.
func (l *Lab) ZtunnelStats(ctx context.Context, i int) (ProcStats, error) {
	p := l.Daemon(i, ztunnelKind)
	if p == nil {
		return ProcStats{}, fmt.Errorf("n%d has no ztunnel running", i)
	}
	st, err := ReadProcStats(p.PID)
	if err != nil {
		return st, err
	}
	m, err := l.ZtunnelMetrics(ctx, i)
	if err != nil {
		return st, err
	}
	st.Goros, st.Heap, st.Stacks = int(m["go_goroutines"]), int64(m["go_memstats_heap_inuse_bytes"]), int64(m["go_memstats_stack_inuse_bytes"])
	return st, nil
}

// ZtunnelMetrics reads node i's ztunnel's unlabelled series (name -> value).
func (l *Lab) ZtunnelMetrics(ctx context.Context, i int) (map[string]float64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", mesh.MetricsPort)
	code, body, err := l.httpGet(ctx, i, url)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d", url, code)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out, nil
}

// clockTicks is the unit of utime and stime in /proc/<pid>/stat
// (USER_HZ, 100 on every Linux architecture Go supports here).
const clockTicks = 100

// ReadCPU reads the CPU time pid has used so far, user and system, all its
// threads.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat of %d: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat of %d: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
