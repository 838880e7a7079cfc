package ztunnel

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentmesh/agentmesh/internal/netns"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
)

// holdOutbound opens a connection from pod A through the outbound listener
// and sends a byte; the passthrough upstream (the echo app on X) answers
// only after a half-close, so the connection stays open until closed.
func holdOutbound(t *testing.T, e *env) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := netns.Do(int(e.a.Fd()), func() (err error) {
		c, err = net.DialTimeout("tcp", "127.0.0.1:15001", 5*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("x")); err != nil {
		return nil, err
	}
	return c, nil
}

// refusedFast checks that c (or its dial, err) was reset well before any
// timeout would have ended it.
func refusedFast(t *testing.T, c net.Conn, err error) {
	t.Helper()
	if err == nil {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("connection beyond the limit: %v, want a reset", err)
	}
}

func TestMaxConnectionsRefusesAtOnceAndRecovers(t *testing.T) {
	e := newEnv(t, func(o *NodeOptions) { o.MaxConnections = 3 })
	e.handOverAB()
	e.orig.set(appX) // passthrough: one slot per connection
	var held []net.Conn
	for range 3 {
		c, err := holdOutbound(t, e)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, "3 connections carried", func() bool { return e.node.limits.Conns.Used.Load() == 3 })
	start := time.Now()
	for range 5 {
		c, err := holdOutbound(t, e)
		refusedFast(t, c, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("5 refusals took %v", d)
	}
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonMaxConnections)); got != 5 {
		t.Errorf("rejected{outbound,max_connections} = %v, want 5", got)
	}
	if n := e.logs.count(map[string]any{"msg": "~connection limit reached"}); n != 1 {
		t.Errorf("%d 'limit reached' log lines for one burst, want 1", n)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, "the held connections released", func() bool { return e.node.limits.Conns.Used.Load() == 0 })
	e.node.limits.Refused.Flush(time.Now().Add(2 * limits.RefusalQuiet))
	e.logs.wait(t, map[string]any{"msg": "~burst over", "refused_max_connections": float64(5)})
	// Recovered: a connection works again.
	c := dialIn(t, e.a, "127.0.0.1:15001")
	if got, err := roundTrip(c, "again"); err != nil || got != "echo:again" {
		t.Errorf("after the burst: %q, %v", got, err)
	}
}

// TestRefusedOutboundConsumesOrigDst: an outbound connection refused by a
// limit still consumes the original destination the connect hook left
// for it; otherwise each refused connection of a burst leaves an orig_dst
// entry behind until the LRU map evicts it.
func TestRefusedOutboundConsumesOrigDst(t *testing.T) {
	e := newEnv(t, func(o *NodeOptions) { o.MaxConnections = 1 })
	e.handOverAB()
	e.orig.set(appX)
	if _, err := holdOutbound(t, e); err != nil {
		t.Fatal(err)
	}
	// The slot is taken at accept, the original destination looked up
	// after: wait for both.
	waitFor(t, "1 connection carried", func() bool { return e.node.limits.Conns.Used.Load() == 1 && e.orig.count() == 1 })
	held := e.orig.last()
	for range 3 {
		c, err := holdOutbound(t, e)
		refusedFast(t, c, err)
	}
	if n := e.orig.count(); n != 4 {
		t.Fatalf("%d orig_dst lookups for 1 carried and 3 refused connections, want 4", n)
	}
	if got := e.orig.last(); got.cookie != held.cookie || got.dst != held.dst || got.src == held.src {
		t.Errorf("refused connection's lookup %+v, want pod A's cookie and 15001 of %+v, another source", got, held)
	}
}

func TestFDBudgetRefusesBeforeEMFILE(t *testing.T) {
	e := newEnv(t)
	e.handOverAB()
	e.orig.set(appX) // passthrough: two sockets per connection
	e.node.limits.FDs.Max.Store(4)
	for range 2 {
		if _, err := holdOutbound(t, e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "4 sockets in use", func() bool { return e.node.limits.FDs.Used.Load() == 4 })
	c, err := holdOutbound(t, e)
	refusedFast(t, c, err)
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonFDBudget)); got != 1 {
		t.Errorf("rejected{outbound,fd_budget} = %v, want 1", got)
	}
	// One unit left: the accept fits, the upstream dial does not.
	e.node.limits.FDs.Max.Store(5)
	c, err = holdOutbound(t, e)
	refusedFast(t, c, err)
	e.logs.wait(t, map[string]any{"msg": "access", "direction": "outbound", "result": "~connection limit"})
	waitFor(t, "the failed connection's socket released", func() bool { return e.node.limits.FDs.Used.Load() == 4 })
	if got := testutil.ToFloat64(e.node.rec.M.Rejected.WithLabelValues("outbound", limits.ReasonFDBudget)); got != 2 {
		t.Errorf("rejected{outbound,fd_budget} = %v after the refused dial, want 2", got)
	}
}
