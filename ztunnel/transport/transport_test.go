package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/hbone"
	"github.com/agentmesh/agentmesh/ztunnel/limits"
	"github.com/agentmesh/agentmesh/ztunnel/record"
)

// TestDialBudget: each TCP connect of an outbound flow is bounded by the
// dial timeout, while the flow as a whole may wait longer than that for
// the destination, which bounds its own delivery by a dial timeout.
func TestDialBudget(t *testing.T) {
	const dialTimeout = 100 * time.Millisecond
	lim, err := limits.New(0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var localDeadline time.Duration
	local := func(ctx context.Context, _ *flow.Pod, _ *flow.Flow, _ netip.AddrPort, _ func()) (net.Conn, bool, error) {
		if dl, ok := ctx.Deadline(); ok {
			localDeadline = time.Until(dl)
		}
		// The destination delivers within its own dial timeout, after the
		// stream took most of one to go out.
		select {
		case <-time.After(dialTimeout * 3 / 2):
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		return c, true, nil
	}
	tr := New(Options{HBONE: hbone.NewClient(hbone.ClientOptions{Logger: slog.New(slog.DiscardHandler)}), Limits: lim,
		Record: record.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 0), DialTimeout: dialTimeout, Local: local})
	t.Cleanup(func() { tr.Close() })
	src, dst := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.7:80")

	n := &deadlineNet{}
	start := time.Now()
	_, err = tr.Dial(context.Background(), &flow.Pod{Net: n}, flow.New(flow.Outbound, flow.Passthrough, src, dst))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("passthrough to an address that never answers: %v, want a deadline", err)
	}
	if took := time.Since(start); took > 10*dialTimeout {
		t.Errorf("passthrough connect gave up after %s, want about the dial timeout %s", took, dialTimeout)
	}
	n.mu.Lock()
	given := n.given
	n.mu.Unlock()
	if len(given) != 1 || given[0] > dialTimeout {
		t.Errorf("connects given %v, want one within the dial timeout %s", given, dialTimeout)
	}

	c, err := tr.Dial(context.Background(), &flow.Pod{Net: n}, flow.New(flow.Outbound, flow.HBONE, src, dst))
	if err != nil {
		t.Fatalf("stream answered after 1.5 dial timeouts: %v, want it carried", err)
	}
	c.Close()
	if localDeadline < dialTimeout+answerGrace {
		t.Errorf("the stream was given %s, want at least the destination's dial timeout and answerGrace (%s)",
			localDeadline, dialTimeout+answerGrace)
	}
}
