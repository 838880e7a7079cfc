package kube

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

// recoveryBound is how soon after a kill new connections must work again:
// generous, as these machines are shared; the figure is printed.
const recoveryBound = 30 * time.Second

// TestKillUnderLoad kills agentd, ztunnel on the source and on the
// destination node, and the controller with SIGKILL, each while a client
// pod on n1 opens a new connection to an echo pod on n2 every 30ms and
// keeps three long streams to it; the lab restarts what died, as a
// DaemonSet or Deployment would. What must hold:
//   - agentd: nothing fails, and every new connection is still captured
//     (mTLS access logs on n1): the eBPF programs stayed attached;
//   - ztunnel: only what it carried fails: its streams may break, new
//     connections fail only until it is ready again;
//   - controller: nothing fails (every node serves its last config);
//     restarted, it gets both components of every node back. Held down
//     (killed by the lab, so not restarted), new connections between
//     existing pods still work.
//
// It prints a table; recovery (kill until new connections work again)
// is asserted only against recoveryBound.
func TestKillUnderLoad(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	namespace(ctx, t, l, "chaos", true, "client", "echo")
	cli := startPod(ctx, t, l, echoPod("chaos", "client", "client", "n1", nil), true)
	srv := startPod(ctx, t, l, echoPod("chaos", "echo", "echo", "n2", nil), true)
	mustSend(ctx, t, l, cli, srv.IPv4(), "before-chaos")
	c := &chaos{ctx: ctx, l: l, cli: cli, dst: srv.IPv4()}
	defer func() {
		t.Logf("kill -9 under load (new connection every %s, %d streams, n1 -> n2):\n%s", dialInterval, loadStreams, c.table())
	}()

	t.Run("agentd", func(t *testing.T) {
		r := c.kill(t, "agentd n1 (source)", lab.AgentdName(1), nil)
		r.nothingFailed(t)
		c.allCaptured(t, r)
	})
	t.Run("ztunnel-source", func(t *testing.T) {
		c.kill(t, "ztunnel n1 (source)", lab.ZtunnelName(1), nil).failedOnlyUntilReady(t)
	})
	t.Run("ztunnel-destination", func(t *testing.T) {
		c.kill(t, "ztunnel n2 (destination)", lab.ZtunnelName(2), nil).failedOnlyUntilReady(t)
	})
	t.Run("controller", func(t *testing.T) {
		r := c.kill(t, "controller", lab.ControllerID(0), func(r *chaosRow) {
			waitResync(ctx, t, l, r.killed)
			r.note = fmt.Sprintf("all nodes reconnected and acked %s after the kill", ms(time.Since(r.killed)))
		})
		r.nothingFailed(t)
	})
	t.Run("controller-held-down", func(t *testing.T) {
		c.holdController(t).nothingFailed(t)
	})
}

// chaos runs the cases of TestKillUnderLoad on one lab.
type chaos struct {
	ctx  context.Context
	l    *lab.Lab
	cli  *lab.Pod
	dst  netip.Addr
	rows []*chaosRow
}

// chaosRow is one case: what was killed and what the load saw.
type chaosRow struct {
	what, pids, note string
	killed, ready    time.Time // ready: the restarted process serves
	dials            []meshlab.DialAttempt
	streams          []meshlab.StreamStats
}

// kill kills name with SIGKILL under load, waits until the lab has
// restarted it and it is ready, runs after (if any), and until 20 new
// connections begun after that worked.
func (c *chaos) kill(t *testing.T, what, name string, after func(*chaosRow)) *chaosRow {
	t.Helper()
	ld := startLoad(c.ctx, t, c.l, c.cli, c.dst, strings.ReplaceAll(name, "-", ""))
	waitUp(t, ld, 10)
	old, n := c.l.PID(name), c.l.Restarts(name)
	r := &chaosRow{what: what, killed: time.Now()}
	c.rows = append(c.rows, r)
	if old <= 1 { // kill(0) or kill(-1) would hit a group or everyone
		t.Fatalf("%s is not running (pid %d)", name, old)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s (pid %d): %v", name, old, err)
	}
	wctx, cancel := context.WithTimeout(c.ctx, loadWait)
	p, err := c.l.WaitRestarted(wctx, name, n+1)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	r.ready, r.pids = time.Now(), fmt.Sprintf("%d -> %d", old, p.PID)
	if after != nil {
		after(r)
	}
	waitGood(t, ld, 20, r.ready)
	r.dials, r.streams = stopLoad(t, ld)
	return r
}

// holdController kills the controller the way the lab does on request
// (so it stays down), keeps it down while 50 new connections work, then
// starts it again and waits until every node is back with it.
func (c *chaos) holdController(t *testing.T) *chaosRow {
	t.Helper()
	name := lab.ControllerID(0)
	ld := startLoad(c.ctx, t, c.l, c.cli, c.dst, "held")
	waitUp(t, ld, 10)
	n := c.l.Restarts(name)
	r := &chaosRow{what: "controller, held down", killed: time.Now()}
	c.rows = append(c.rows, r)
	if err := c.l.KillController(0); err != nil {
		t.Fatal(err)
	}
	waitGood(t, ld, 50, r.killed)
	down := time.Since(r.killed)
	if pid, m := c.l.PID(name), c.l.Restarts(name); pid != 0 || m != n {
		t.Errorf("the lab restarted a controller it was asked to kill: pid %d, restarts %d -> %d", pid, n, m)
	}
	started := time.Now()
	if err := c.l.StartController(c.ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitResync(c.ctx, t, c.l, started)
	r.ready = time.Now()
	r.note = fmt.Sprintf("down %s with no failure; restarted by the test, nodes back %s later",
		ms(down), ms(r.ready.Sub(started)))
	waitGood(t, ld, 10, r.ready)
	r.dials, r.streams = stopLoad(t, ld)
	return r
}

// failed lists the failed connections begun at or after since.
func (r *chaosRow) failed(since time.Time) []meshlab.DialAttempt {
	var out []meshlab.DialAttempt
	for _, a := range r.dials {
		if !a.OK && !a.At.Before(since) {
			out = append(out, a)
		}
	}
	return out
}

// broken counts the streams that broke.
func (r *chaosRow) broken() int {
	n := 0
	for _, s := range r.streams {
		if s.BrokenAt != 0 {
			n++
		}
	}
	return n
}

// recovery is the time from the kill until the first good connection
// after the last failed one ended (0 when none failed).
func (r *chaosRow) recovery() time.Duration {
	var lastFail time.Time
	for _, a := range r.dials {
		if !a.OK {
			lastFail = a.At
		}
	}
	if lastFail.IsZero() {
		return 0
	}
	for _, a := range r.dials {
		if a.OK && a.At.After(lastFail) {
			return end(a).Sub(r.killed)
		}
	}
	return -1 // never worked again (the waits would have failed first)
}

// nothingFailed: no connection failed and no stream broke.
func (r *chaosRow) nothingFailed(t *testing.T) {
	t.Helper()
	if f := r.failed(time.Time{}); len(f) > 0 {
		t.Errorf("%s: %d of %d new connections failed, want none; first: %+v", r.what, len(f), len(r.dials), f[0])
	}
	if b := r.broken(); b > 0 {
		t.Errorf("%s: %d of %d streams broke, want none: %+v", r.what, b, len(r.streams), r.streams)
	}
}

// failedOnlyUntilReady: only connections the killed process carried
// failed (in flight at the kill or begun before the restarted process was
// ready), and new connections worked again within recoveryBound.
func (r *chaosRow) failedOnlyUntilReady(t *testing.T) {
	t.Helper()
	for _, a := range r.failed(time.Time{}) {
		if end(a).Before(r.killed) || !a.At.Before(r.ready) {
			t.Errorf("%s: connection from %s to %s after the kill (ready after %s) failed: %s", r.what,
				ms(a.At.Sub(r.killed)), ms(end(a).Sub(r.killed)), ms(r.ready.Sub(r.killed)), a.Error)
		}
	}
	if rec := r.recovery(); rec < 0 || rec > recoveryBound {
		t.Errorf("%s: new connections worked again %s after the kill, want within %s", r.what, ms(rec), recoveryBound)
	}
}

// allCaptured: every good connection begun after the kill has an mTLS
// outbound access log on n1 from its address (uncaptured connections
// would go direct, and work too).
func (c *chaos) allCaptured(t *testing.T, r *chaosRow) {
	t.Helper()
	var want []meshlab.DialAttempt
	for _, a := range r.dials {
		if a.OK && !a.At.Before(r.killed) {
			want = append(want, a)
		}
	}
	dst := netip.AddrPortFrom(c.dst, echoPort)
	waitFor(t, fmt.Sprintf("mTLS access logs on n1 of the %d connections since the kill", len(want)), func() (bool, string) {
		logs, err := c.l.AccessLogs(1)
		if err != nil {
			return false, err.Error()
		}
		logged := map[string]bool{}
		for _, a := range logs {
			if a.Direction == "outbound" && a.Dst() == dst && a.MTLS && !a.Time.Before(r.killed) {
				logged[a.SrcAddr] = true
			}
		}
		for _, a := range want {
			if !logged[a.Local] {
				return false, fmt.Sprintf("none for %+v", a)
			}
		}
		return true, ""
	})
}

// table prints the rows.
func (c *chaos) table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KILLED\tPID\tREADY AFTER\tNEW CONNS\tFAILED\tSTREAMS BROKEN\tRECOVERY\tNOTE")
	for _, r := range c.rows {
		ready, rec := "-", "-"
		if !r.ready.IsZero() {
			ready = ms(r.ready.Sub(r.killed))
		}
		if r.dials != nil {
			rec = ms(r.recovery())
			if len(r.failed(time.Time{})) == 0 {
				rec = "none failed"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d/%d\t%s\t%s\n", r.what, or(r.pids, "-"), ready,
			len(r.dials), len(r.failed(time.Time{})), r.broken(), len(r.streams), rec, r.note)
	}
	tw.Flush()
	return b.String()
}

// end is when a connection attempt ended.
func end(a meshlab.DialAttempt) time.Time {
	return a.At.Add(time.Duration(a.MS * float64(time.Millisecond)))
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
