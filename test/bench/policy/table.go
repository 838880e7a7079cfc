package policy

import (
	"fmt"
	"io"
	"time"

	"github.com/agentmesh/agentmesh/test/bench/controlplane"
)

// WriteTable prints the propagation times (p50, p90, max) and the ratio to
// the watch floor.
func WriteTable(w io.Writer, r *Result) {
	fmt.Fprintf(w, "policy: %d nodes, one target pod per node; a Deny AgentPolicy selecting every target applied and deleted %d times;\n", r.Nodes, r.Rounds)
	fmt.Fprintf(w, "enforced = a probe connection from a client pod on n1 to the node's target is refused (HBONE 401), times from the API call being sent\n\n")
	fmt.Fprintf(w, "%-44s %10s %10s %10s\n", fmt.Sprintf("policy change (%d rounds)", len(r.Every)), "p50(ms)", "p90(ms)", "max(ms)")
	row(w, "create call (API round trip)", r.Create)
	row(w, "informer saw it (watch floor)", r.Informer)
	row(w, "apply -> first node enforcing", r.First)
	row(w, "apply -> every node enforcing", r.Every)
	row(w, "delete -> every node allowing again", r.Restored)
	fmt.Fprintf(w, "ratio every-node-enforcing/informer: p50 %s  p90 %s\n", ratio(r.Every, r.Informer, 0.5), ratio(r.Every, r.Informer, 0.9))
}

func row(w io.Writer, name string, d []time.Duration) {
	fmt.Fprintf(w, "%-44s %10.1f %10.1f %10.1f\n", name, ms(controlplane.Quantile(d, 0.5)), ms(controlplane.Quantile(d, 0.9)), ms(controlplane.Quantile(d, 1)))
}

func ratio(mesh, base []time.Duration, p float64) string {
	m, b := controlplane.Quantile(mesh, p), controlplane.Quantile(base, p)
	if m <= 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("x%.1f", float64(m)/float64(b))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
