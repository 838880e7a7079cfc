package controlplane

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// WriteTable prints the object counts, the controller's memory and the
// propagation latencies (p50, p90, max) with the baseline ratio.
func WriteTable(w io.Writer, r *Result) {
	deb := "default"
	if r.Debounce > 0 {
		deb = r.Debounce.String()
	}
	fmt.Fprintf(w, "control plane: %d services, %d pods (%d workloads and %d ready endpoints in each node's view), %d nodes, %d namespaces; controller debounce %s\n",
		r.Services, r.Pods, r.Workloads, r.Endpoints, r.Nodes, r.Namespaces, deb)
	fmt.Fprintf(w, "setup: objects and endpointslices in %v; all %d node streams had the full view %v after connecting\n\n",
		r.Populate.Round(time.Millisecond), r.Nodes, r.InitialSync.Round(time.Millisecond))
	fmt.Fprintf(w, "sent per node: the full view %.2f MiB; a measured change %.1f KiB (its own delta, and the endpoint slice update that follows it)\n\n",
		r.FullBytes/(1<<20), r.ChangeBytes/(1<<10))
	fmt.Fprintf(w, "%-34s %12s %12s\n", "controller memory", "RSS(MiB)", "heap(MiB)")
	fmt.Fprintf(w, "%-34s %12.1f %12.1f\n", "after initial sync (settled)", mib(r.RSS), mib(r.HeapInuse))
	fmt.Fprintf(w, "%-34s %12.1f %12.1f\n\n", fmt.Sprintf("after %d service changes", len(r.Mesh)), mib(r.RSSAfter), mib(r.HeapInuseAfter))
	fmt.Fprintf(w, "%-48s %10s %10s %10s\n", fmt.Sprintf("service change (%d changes)", len(r.Mesh)), "p50(ms)", "p90(ms)", "max(ms)")
	row(w, "update call (API round trip)", r.Update)
	row(w, "informer saw it (watch floor, from update)", r.Informer)
	row(w, "first node received+acked (from update)", r.First)
	row(w, "every node received+acked (from update)", r.Mesh)
	if slices.Min(append([]time.Duration{0}, r.Informer...)) < 0 {
		fmt.Fprintln(w, "(a negative informer time: the watch event came before the update's response)")
	}
	fmt.Fprintf(w, "controller /status showed every node's ack for %d of %d changes\n", r.Acked, len(r.Mesh))
	fmt.Fprintf(w, "ratio mesh/informer, both from the update being sent: p50 %s  p90 %s\n",
		ratio(r, 0.5), ratio(r, 0.9))
	if r.BurstSize > 0 {
		fmt.Fprintf(w, "\nburst of %d changes sent back to back (in %v): the last on the first node %v and on every node %v after the first was sent; %.1f versions applied per node\n",
			r.BurstSize, r.BurstSend.Round(time.Millisecond), r.BurstFirst.Round(time.Millisecond), r.BurstLast.Round(time.Millisecond), r.BurstVersions)
	}
	if r.RestartAll > 0 {
		fmt.Fprintf(w, "controller restart with %d nodes connected (stopped in %v, a change made meanwhile): ready %v, first node %v, every node %v after the new process started (the nodes' retry backoff included)\n",
			r.Nodes, r.RestartStop.Round(time.Millisecond), r.RestartReady.Round(time.Millisecond), r.RestartFirst.Round(time.Millisecond), r.RestartAll.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\n%-34s %9s %11s %11s %11s %11s\n", "CPU seconds used (2 cores shared)", "wall", "controller", "receivers", "apiserver", "etcd")
	cpuRow(w, "initial view to every node", r.InitialCPU)
	cpuRow(w, fmt.Sprintf("%d measured changes", len(r.Mesh)), r.ChangesCPU)
	if r.RestartAll > 0 {
		cpuRow(w, "restart until every node had it", r.RestartCPU)
	}
	fmt.Fprintln(w, "(receivers: this process, i.e. the in-process node stream clients decoding and applying, and the baseline informer)")
}

func cpuRow(w io.Writer, name string, c CPU) {
	fmt.Fprintf(w, "%-34s %9.2f %11.2f %11.2f %11.2f %11.2f\n", name, c.Wall.Seconds(), c.Controller.Seconds(),
		c.Receivers.Seconds(), c.APIServer.Seconds(), c.Etcd.Seconds())
}

func row(w io.Writer, name string, d []time.Duration) {
	fmt.Fprintf(w, "%-48s %10.1f %10.1f %10.1f\n", name, ms(Quantile(d, 0.5)), ms(Quantile(d, 0.9)), ms(Quantile(d, 1)))
}

// ratio compares mesh and informer latency at quantile p, each counted from
// the update being sent (so neither is near zero).
func ratio(r *Result, p float64) string {
	mesh := Quantile(sum(r.Update, r.Mesh), p)
	base := Quantile(sum(r.Update, r.Informer), p)
	if mesh <= 0 || base <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("x%.1f", float64(mesh)/float64(base))
}

func sum(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] + b[i]
	}
	return out
}

// Quantile is the nearest-rank p-quantile of d, unsorted (0 if empty).
func Quantile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	i := int(p*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b uint64) float64       { return float64(b) / (1 << 20) }
