package limits

import (
	"log/slog"
	"syscall"
	"testing"

	"github.com/agentmesh/agentmesh/ztunnel/podnet"
)

func TestNewFromRlimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	l, err := New(7, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(rl.Cur) - Reserve(int64(rl.Cur)); l.FDs.Max.Load() != want || l.Conns.Max.Load() != 7 {
		t.Errorf("fd budget %d, max connections %d; want %d, 7", l.FDs.Max.Load(), l.Conns.Max.Load(), want)
	}
	if r := Reserve(20000); r != 1000 {
		t.Errorf("reserve of 20000 = %d", r)
	}
}

func TestAdmitSocket(t *testing.T) {
	l := &Limits{}
	l.FDs.Max.Store(3)
	l.Conns.Max.Store(1)
	steps := []struct {
		kind podnet.Kind
		want string
	}{
		{podnet.Outbound, ""},                    // 1 fd, 1 conn
		{podnet.Plaintext, ReasonMaxConnections}, // no conn slot left: its fd is given back
		{podnet.HBONE, ""},                       // 2 fds: an HBONE connection takes no slot
		{podnet.HBONE, ""},                       // 3 fds
		{podnet.HBONE, ReasonFDBudget},           // no fd left
	}
	for i, s := range steps {
		if got := l.AdmitSocket(s.kind); got != s.want {
			t.Errorf("step %d: AdmitSocket(%s) = %q, want %q", i, s.kind, got, s.want)
		}
	}
	if l.FDs.Used.Load() != 3 || l.Conns.Used.Load() != 1 {
		t.Errorf("in use: %d fds, %d conns; want 3, 1", l.FDs.Used.Load(), l.Conns.Used.Load())
	}
	l.ReleaseSocket(podnet.Outbound)
	if got := l.AdmitSocket(podnet.Plaintext); got != "" {
		t.Errorf("after a release: %q", got)
	}
}

func TestTrimmerAfterBurst(t *testing.T) {
	var tr Trimmer
	for _, step := range []struct {
		conns int64
		want  bool
	}{
		{10, false}, {2000, false}, {1900, false}, // still busy
		{1100, false},            // fell by 900 but to more than half
		{900, true},              // to half the peak or less: trim
		{800, false},             // the new peak is 900: fell by 100 only
		{0, true},                // by 900 (>= TrimMin) to below half
		{100, false}, {0, false}, // small swings do not trim
	} {
		if got := tr.Due(step.conns); got != step.want {
			t.Errorf("Due(%d) = %v, want %v", step.conns, got, step.want)
		}
	}
}
