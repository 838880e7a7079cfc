package bench

import (
	"fmt"
	"io"
	"strings"
)

// WriteTable prints the run's parameters, one row per result, and for
// every mesh scenario its ratios to its direct baseline.
func WriteTable(w io.Writer, opts Options, results []Result) {
	family := "IPv4"
	if opts.IPv6 {
		family = "IPv6"
	}
	fmt.Fprintf(w, "latency: %g req/s over %d connections, %d-byte echo, %v per scenario; throughput: %d MiB on one stream; %s\n\n",
		opts.Rate, opts.Conns, opts.Size, opts.Duration, opts.BulkBytes>>20, family)
	fmt.Fprintf(w, "%-18s %-12s %8s %6s %8s %8s %8s %8s %18s\n",
		"scenario", "path", "requests", "errors", "p50(us)", "p90(us)", "p99(us)", "max(us)", "throughput(Gbit/s)")
	for _, r := range results {
		writeRow(w, r)
	}
	writeRatios(w, results)
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(w, "%s failed: %v\n", r.Scenario.Name, r.Err)
		}
	}
}

func writeRow(w io.Writer, r Result) {
	l := r.Latency
	path := r.Path
	if path == "" {
		path = "?"
	}
	tput := "-"
	if r.Bulk.Bytes > 0 {
		tput = fmt.Sprintf("%.2f", r.Bulk.Gbps)
	}
	if l.Scheduled == 0 {
		fmt.Fprintf(w, "%-18s %-12s %8s %6s %8s %8s %8s %8s %18s\n", r.Scenario.Name, path, "-", "-", "-", "-", "-", "-", tput)
		return
	}
	fmt.Fprintf(w, "%-18s %-12s %8d %6d %8.1f %8.1f %8.1f %8.1f %18s\n",
		r.Scenario.Name, path, l.Scheduled, l.Errors, l.P50us, l.P90us, l.P99us, l.Maxus, tput)
}

// writeRatios prints mesh/direct (and haproxy/direct) ratios: latency above
// 1 means slower than direct, throughput below 1 means it moves less.
func writeRatios(w io.Writer, results []Result) {
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Scenario.Name] = r
	}
	var lines []string
	for _, r := range results {
		base, ok := byName[r.Scenario.Baseline]
		if r.Scenario.Baseline == "" || !ok {
			continue
		}
		lines = append(lines, fmt.Sprintf("  %s vs %s: p50 %s (%s)  p90 %s  p99 %s  throughput %s",
			r.Scenario.Name, base.Scenario.Name,
			ratio(r.Latency.P50us, base.Latency.P50us), added(r.Latency.P50us, base.Latency.P50us),
			ratio(r.Latency.P90us, base.Latency.P90us),
			ratio(r.Latency.P99us, base.Latency.P99us), ratio(r.Bulk.Gbps, base.Bulk.Gbps)))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nratios to direct (latency > 1: slower than direct; throughput < 1: moves less):\n%s\n",
		strings.Join(lines, "\n"))
}

// added is the latency a proxy adds to direct, in microseconds.
func added(proxied, direct float64) string {
	if proxied <= 0 || direct <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%+.0fus", proxied-direct)
}

func ratio(mesh, direct float64) string {
	if mesh <= 0 || direct <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("x%.2f", mesh/direct)
}
