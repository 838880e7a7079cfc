package services

import (
	"fmt"
	"io"
)

const rowFormat = "%-12s %-19s %8s %6s %8s %8s %8s %9s %7s %6s %12s %12s\n"

// WriteTable prints the run's sizes, one line per row, the ratios between
// the rows and any row's error.
func WriteTable(w io.Writer, r *Result) {
	o := r.Options
	fmt.Fprintf(w, "services: client pod on n1, server pod on n2; Service %s has one endpoint, the mesh row's server pod; IPv4\n", servicesKey)
	fmt.Fprintf(w, "latency: %g req/s over %d connections for %v, %d-byte echo; new connections: %d at a time for %v, each dial + one %d-byte echo + close\n\n",
		o.Rate, o.Conns, o.Duration, o.Size, o.Concurrency, o.ConnectDuration, o.Size)
	fmt.Fprintf(w, rowFormat, "row", "path", "requests", "errors", "p50(us)", "p90(us)", "p99(us)",
		"conns/s", "conns", "errors", "conn p50(us)", "conn p99(us)")
	for _, row := range r.Rows {
		writeRow(w, row)
	}
	writeRatios(w, r)
	for _, row := range r.Rows {
		if row.Err != nil {
			fmt.Fprintf(w, "%s failed: %v\n", row.Kind, row.Err)
		}
	}
}

func writeRow(w io.Writer, r Row) {
	path := r.Path
	if path == "" {
		path = "?"
	}
	l, c := r.Latency, r.Connect
	cells := []string{"-", "-", "-", "-", "-"}
	if l.Scheduled > 0 {
		cells = []string{fmt.Sprint(l.Scheduled), fmt.Sprint(l.Errors), us(l.P50us), us(l.P90us), us(l.P99us)}
	}
	conn := []string{"-", "-", "-", "-", "-"}
	if c.Seconds > 0 {
		conn = []string{fmt.Sprintf("%.1f", c.PerSecond), fmt.Sprint(c.Connections), fmt.Sprint(c.Errors), us(c.P50us), us(c.P99us)}
	}
	fmt.Fprintf(w, rowFormat, r.Kind, path, cells[0], cells[1], cells[2], cells[3], cells[4],
		conn[0], conn[1], conn[2], conn[3], conn[4])
}

// writeRatios compares each mesh row with direct, and the VIP row with
// the pod-IP row.
func writeRatios(w io.Writer, r *Result) {
	pairs := [][2]Kind{{PodIP, Direct}, {VIP, Direct}, {VIP, PodIP}}
	printed := false
	for _, p := range pairs {
		a, b := r.Row(p[0]), r.Row(p[1])
		if a == nil || b == nil {
			continue
		}
		if !printed {
			fmt.Fprintf(w, "\nratios (latency and connection time > 1: slower; conns/s < 1: fewer new connections per second):\n")
			printed = true
		}
		fmt.Fprintf(w, "  %-24s p50 %s  p90 %s  p99 %s  conns/s %s  conn p50 %s  conn p99 %s\n",
			fmt.Sprintf("%s / %s:", a.Kind, b.Kind),
			ratio(a.Latency.P50us, b.Latency.P50us), ratio(a.Latency.P90us, b.Latency.P90us),
			ratio(a.Latency.P99us, b.Latency.P99us), ratio(a.Connect.PerSecond, b.Connect.PerSecond),
			ratio(a.Connect.P50us, b.Connect.P50us), ratio(a.Connect.P99us, b.Connect.P99us))
	}
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("x%.2f", a/b)
}

func us(v float64) string { return fmt.Sprintf("%.1f", v) }
