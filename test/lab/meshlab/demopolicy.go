package meshlab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/agentmesh/agentmesh/test/lab"
)

// demoPolicy lets only planner call data-validator, on the agent port.
func demoPolicy() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "agentmesh.io/v1alpha1", "kind": "AgentPolicy",
		"metadata": map[string]any{"name": "only-planner", "namespace": "agents"},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"app": "data-validator"}},
			"action":      "Allow",
			"rules": []any{map[string]any{
				"from":  []any{map[string]any{"serviceAccounts": []any{"planner"}}},
				"ports": []any{map[string]any{"port": int64(agentPort)}},
			}},
		},
	}}
}

var policyGVR = schema.GroupVersionResource{Group: "agentmesh.io", Version: "v1alpha1", Resource: "agentpolicies"}

// runPolicyDemo applies demoPolicy, waits until billing's call to
// data-validator is refused, then makes both calls and prints what each
// ztunnel decided.
func runPolicyDemo(ctx context.Context, l *lab.Lab, pods map[string]*lab.Pod, w io.Writer) error {
	dyn, err := dynamic.NewForConfig(l.RestConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	fmt.Fprintf(w, "\napplying AgentPolicy agents/only-planner: data-validator admits only ServiceAccount planner, port %d\n", agentPort)
	sent := time.Now()
	if _, err := dyn.Resource(policyGVR).Namespace("agents").Create(ctx, demoPolicy(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy: %w", err)
	}
	start := time.Now()
	billing := demoCall{from: "billing", to: "data-validator"}
	for {
		r, err := makeCall(ctx, pods, billing)
		if err != nil {
			return err
		}
		if r.result.Error != "" {
			break
		}
		if time.Since(start) > 30*time.Second {
			return fmt.Errorf("billing -> data-validator still allowed 30s after the policy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(w, "the create call took %s; enforced on the destination's node %s after it returned\n\n",
		start.Sub(sent).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tRESULT\tDATA-VALIDATOR'S ZTUNNEL")
	for _, c := range []demoCall{{from: "planner", to: "data-validator"}, billing} {
		since := time.Now()
		r, err := makeCall(ctx, pods, c)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s -> %s\t%s\t%s\n", c.from, c.to, callOutcome(r), decisionOf(ctx, l, pods[c.from], pods[c.to], r, since))
	}
	tw.Flush()
	return nil
}

// decisionOf is what the callee's ztunnel logged about the call: the deny
// line, or the inbound access line of an allowed call.
func decisionOf(ctx context.Context, l *lab.Lab, from, to *lab.Pod, r *callReport, since time.Time) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if r.result.Error == "" {
		// From the caller's address: a connection of another caller
		// closed by the policy (revoked) can end after since too.
		a, err := l.WaitAccessLog(ctx, to.Node, func(a lab.AccessLog) bool {
			src := a.Src().Addr().Unmap()
			return a.Direction == "inbound" && a.Dst() == r.addr && !a.Time.Before(since) &&
				(src == from.IPv4() || src == from.IPv6())
		})
		if err != nil {
			return "-"
		}
		return "allowed, mTLS from " + orDash(a.SrcIdentity)
	}
	line, err := lab.WaitLogLine(ctx, l.DaemonLog(to.Node, "ztunnel"), "connection denied by policy", func(ll lab.LogLine) bool {
		src, _ := netip.ParseAddrPort(ll.Str("src_addr"))
		return src.Addr().Unmap() == from.IPv4()
	})
	if err != nil {
		return "-"
	}
	return fmt.Sprintf("denied %s: %s %s", field(line, "src_identity"), field(line, "reason"), field(line, "policy"))
}

// callOutcome is the HTTP status, or the last part of the caller's error
// ("connection reset by peer": its ztunnel closed the connection when the
// destination answered 401).
func callOutcome(r *callReport) string {
	if r.result.Error == "" {
		return fmt.Sprint(r.result.Status)
	}
	msg := r.result.Error
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "refused (" + msg + ")"
}

func field(l lab.LogLine, k string) string { return orDash(strings.TrimSpace(l.Str(k))) }
