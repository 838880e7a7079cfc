package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// TestBurstOverLimit: a burst of 600 connections from a pod whose node
// tunnel carries at most 200 is partly refused at once and partly
// carried, and the refused connections leave nothing behind in the
// datapath: the source node's orig_dst map (where the connect hook
// records each captured connection's destination for ztunnel to consume)
// is empty again once the burst is over.
func TestBurstOverLimit(t *testing.T) {
	const limit, conns = 200, 600
	l := newLab(t, lab.Options{Nodes: 2, ZtunnelFlags: []string{"--max-connections", fmt.Sprint(limit)}})
	a := addPod(t, l, "a", 1, true)
	b := addPod(t, l, "b", 2, true)
	to := addr(b.IPv4(), echoPort)
	send(t, l, a, to, "warm-up")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := a.Run(ctx, l.Bin("meshlab"), "app", "burst", "--to", to.String(),
		"--conns", fmt.Sprint(conns), "--hold", "3s", "--timeout", "20s")
	var res meshlab.BurstResult
	if jerr := json.Unmarshal(lastLine(out), &res); err != nil || jerr != nil {
		t.Fatalf("burst: %v %v: %s", err, jerr, out)
	}
	t.Logf("burst of %d over a limit of %d: %d echoed, %d refused %v in %.0fms (p50), %.0fms (max)",
		conns, limit, res.Echoed, res.Failed, res.Errors, res.FailP50MS, res.FailMaxMS)
	if res.Echoed == 0 || res.Echoed > limit || res.Echoed+res.Failed != conns {
		t.Errorf("%d echoed and %d failed of %d with a limit of %d", res.Echoed, res.Failed, conns, limit)
	}
	var orig, cookie int
	waitCond(t, 10*time.Second, "n1's orig_dst maps empty after the burst", func() (bool, string) {
		var err1, err2 error
		orig, err1 = l.MapEntries(1, bpf.MapOrigDst)
		cookie, err2 = l.MapEntries(1, bpf.MapOrigDstCookie)
		return err1 == nil && err2 == nil && orig == 0 && cookie == 0,
			fmt.Sprintf("%s %d, %s %d (%v, %v)", bpf.MapOrigDst, orig, bpf.MapOrigDstCookie, cookie, err1, err2)
	})
	send(t, l, a, to, "after-the-burst")
}
