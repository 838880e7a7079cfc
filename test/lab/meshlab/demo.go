package meshlab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// demoCall is one agent-to-agent call the demo makes.
type demoCall struct {
	from, to string
	v6       bool
}

// demoCalls: cross-node, same-node, cross-node over IPv6, and to a pod
// outside the mesh.
var demoCalls = []demoCall{
	{from: "planner", to: "data-validator"},
	{from: "planner", to: "billing"},
	{from: "planner", to: "data-validator", v6: true},
	{from: "planner", to: "legacy-batch"},
}

// callReport is what the demo learned about one call.
type callReport struct {
	demoCall
	addr     netip.AddrPort
	toNode   int // the target's node
	sameNode bool
	enrolled bool // the target is in the mesh
	result   CallResult
	out, in  *lab.AccessLog // ztunnel access logs of both ends
	clear    bool           // the reply crossed the wire in plaintext
}

// runDemo is `meshlab demo`.
func runDemo(ctx context.Context, args []string, stdout io.Writer) (err error) {
	var f labFlags
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	f.register(fs, 2)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if f.nodes < 2 {
		return fmt.Errorf("%w: the demo needs 2 nodes or more", ErrUsage)
	}
	mode := ""
	if f.kube {
		mode = " (Kubernetes mode: kube-apiserver, the AgentMesh controller, pods made through the API)"
	}
	fmt.Fprintf(stdout, "starting a %d-node lab with agentd and ztunnel%s...\n", f.nodes, mode)
	if err := runDemoLab(ctx, f, stdout); err != nil || !f.kube {
		return err
	}
	return runAgentsDemo(ctx, f, stdout)
}

// runDemoLab is the demo's first lab: calls by pod IP, and in Kubernetes
// mode by Service name and under a policy.
func runDemoLab(ctx context.Context, f labFlags, stdout io.Writer) (err error) {
	l, err := f.newLab(ctx)
	if err != nil {
		return err
	}
	defer func() { err = closeLab(l, stdout, err) }()
	pods, err := f.startAgents(ctx, l, demoPods(f.nodes))
	if err != nil {
		return err
	}
	if f.kube {
		fmt.Fprintf(stdout, "lab %s: Deployments planner, billing (n1), data-validator (%d replicas across the nodes), legacy-batch (not in the mesh) (n2), each behind a Service; the calls go to the pods on those nodes\n\n",
			l.ID(), replicas("data-validator"))
	} else {
		fmt.Fprintf(stdout, "lab %s: pods planner, billing (n1), data-validator, legacy-batch (not in the mesh) (n2)\n\n", l.ID())
	}
	reports, err := makeCalls(ctx, l, pods)
	if err != nil {
		return err
	}
	collectAccessLogs(ctx, l, reports)
	printReports(stdout, reports)
	if f.kube {
		if err := runServiceDemo(ctx, l, pods, stdout); err != nil {
			return err
		}
		return runPolicyDemo(ctx, l, pods, stdout)
	}
	return nil
}

// makeCalls has the caller agents make each call while the wire is captured.
func makeCalls(ctx context.Context, l *lab.Lab, pods map[string]*lab.Pod) ([]*callReport, error) {
	capt, err := l.Capture(ctx)
	if err != nil {
		return nil, err
	}
	defer capt.Stop()
	var reports []*callReport
	for _, c := range demoCalls {
		r, err := makeCall(ctx, pods, c)
		if err != nil {
			return nil, err
		}
		reports = append(reports, r)
	}
	segs, err := capt.Stop()
	if err != nil {
		return nil, err
	}
	for _, r := range reports {
		r.clear = sawInClear(segs, r)
	}
	return reports, nil
}

// makeCall asks the caller's agent (on its pod's loopback) to call the target.
func makeCall(ctx context.Context, pods map[string]*lab.Pod, c demoCall) (*callReport, error) {
	from, to := pods[c.from], pods[c.to]
	ip := to.IPv4()
	if c.v6 {
		ip = to.IPv6()
	}
	r := &callReport{demoCall: c, addr: netip.AddrPortFrom(ip, agentPort), toNode: to.Node, sameNode: from.Node == to.Node, enrolled: to.Enrolled}
	target := "http://" + r.addr.String() + "/"
	u := fmt.Sprintf("http://127.0.0.1:%d/call?to=%s", agentPort, url.QueryEscape(target))
	_, body, err := from.HTTPGet(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("ask %s to call %s: %w", c.from, target, err)
	}
	if err := json.Unmarshal(body, &r.result); err != nil {
		return nil, fmt.Errorf("decode call result %q: %w", body, err)
	}
	return r, nil
}

// sawInClear reports whether the target's reply (which names the agent)
// crossed the wire readable, on a flow that involves the target's address.
func sawInClear(segs []lab.Segment, r *callReport) bool {
	marker := fmt.Sprintf(`"agent":%q`, r.to)
	for _, f := range lab.FlowsContaining(segs, []byte(marker)) {
		if f.Src.Addr() == r.addr.Addr() || f.Dst.Addr() == r.addr.Addr() {
			return true
		}
	}
	return false
}

// collectAccessLogs waits (briefly) for ztunnel's access lines for each call.
func collectAccessLogs(ctx context.Context, l *lab.Lab, reports []*callReport) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := true
		for _, r := range reports {
			r.out = lastAccess(l, 1, "outbound", r.addr)
			r.in = lastAccess(l, r.toNode, "inbound", r.addr)
			done = done && r.out != nil && (r.in != nil || !r.enrolled)
		}
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastAccess is node's latest access line in direction to dst.
func lastAccess(l *lab.Lab, node int, direction string, dst netip.AddrPort) *lab.AccessLog {
	logs, err := l.AccessLogs(node)
	if err != nil {
		return nil
	}
	for i := len(logs) - 1; i >= 0; i-- {
		a := logs[i]
		if a.Direction == direction && a.Dst().Addr().Unmap() == dst.Addr() && a.Dst().Port() == dst.Port() {
			return &a
		}
	}
	return nil
}
