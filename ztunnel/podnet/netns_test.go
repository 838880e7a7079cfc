package podnet

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

// TestOpenReusesTimeWait: opening a pod's netns turns on TIME_WAIT reuse
// there (and only there), so that deliveries from the pod's own address
// to its app do not run out of ports.
func TestOpenReusesTimeWait(t *testing.T) {
	ns := testutil.NewNetns(t)
	read := func(fd int) string {
		t.Helper()
		var v []byte
		if err := netns.Do(fd, func() error {
			var err error
			v, err = os.ReadFile(TimeWaitReuse)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(bytes.TrimSpace(v))
	}
	own, err := os.ReadFile(TimeWaitReuse)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(int(ns.Fd())); got != "2" {
		t.Fatalf("a new netns has %s=%s, want the default 2", TimeWaitReuse, got)
	}
	dup, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Netns{}.Open(handoff.Pod{UID: "u", Name: "p", Namespace: "ns"}, dup)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := read(int(ns.Fd())); got != "1" {
		t.Errorf("after Open the pod's netns has %s=%s, want 1", TimeWaitReuse, got)
	}
	if now, _ := os.ReadFile(TimeWaitReuse); !bytes.Equal(now, own) {
		t.Errorf("ztunnel's own netns changed to %q", now)
	}
}
