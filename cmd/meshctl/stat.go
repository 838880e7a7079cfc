package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// The series meshctl stat reads (ztunnel/record, TCPLabelNames).
const (
	tcpOpened   = "agentmesh_tcp_connections_opened_total"
	tcpClosed   = "agentmesh_tcp_connections_closed_total"
	tcpReceived = "agentmesh_tcp_received_bytes_total"
	tcpSent     = "agentmesh_tcp_sent_bytes_total"
	// reqDuration is the per-request histogram (RequestLabelNames); its
	// sample count is the request count.
	reqDuration = "agentmesh_request_duration_seconds"
)

// statFlags are meshctl stat's flags.
type statFlags struct {
	sources   []nodeURL
	interval  time.Duration
	by        string
	namespace string
	output    string
	timeout   time.Duration
}

// nodeURL is one ztunnel's endpoint (metrics or admin), optionally
// reached from inside a network namespace.
type nodeURL struct {
	url, netns string
}

// parseNodeURL reads [netns-path=]URL: a path before "=" (it starts with
// "/") is the network namespace to reach URL from.
func parseNodeURL(v string) nodeURL {
	if p, u, ok := strings.Cut(v, "="); ok && strings.HasPrefix(p, "/") {
		return nodeURL{url: u, netns: p}
	}
	return nodeURL{url: v}
}

func parseStatFlags(args []string, stderr io.Writer) (*statFlags, error) {
	f := statFlags{}
	fs := flag.NewFlagSet("meshctl stat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshctl stat [flags]\n\nPer-workload traffic from the node tunnels' metrics, measured over --interval: connections and bytes, and for\nrequests proxied per request their rate, success rate (status below 500) and p50/p95/p99 latency.")
		fs.PrintDefaults()
	}
	fs.Func("metrics", "a ztunnel's metrics URL, [netns-path=]http://host:port/metrics, one per node (repeatable; default http://127.0.0.1:15020/metrics)", func(v string) error {
		f.sources = append(f.sources, parseNodeURL(v))
		return nil
	})
	fs.DurationVar(&f.interval, "interval", 5*time.Second, "time between the two reads the rates come from")
	fs.StringVar(&f.by, "by", "workload", "rows: workload (each workload as a destination, counted by its own node) or edge (caller -> callee, counted by the caller's node)")
	fs.StringVar(&f.namespace, "n", "", "only workloads (destinations, or callers with --by edge) of this namespace")
	fs.StringVar(&f.output, "o", "text", "output: text or json")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "timeout of each read")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if len(f.sources) == 0 {
		f.sources = []nodeURL{{url: "http://127.0.0.1:15020/metrics"}}
	}
	if f.interval <= 0 {
		errs = append(errs, errors.New("--interval must be positive"))
	}
	if f.by != "workload" && f.by != "edge" {
		errs = append(errs, fmt.Errorf("--by %q: want workload or edge", f.by))
	}
	if f.output != "text" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want text or json", f.output))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return nil, err
	}
	return &f, nil
}

// StatRow is one row of meshctl stat: a workload (its traffic as a
// destination) or an edge (From -> To).
type StatRow struct {
	From string `json:"from,omitempty"` // namespace/workload, --by edge only
	To   string `json:"to"`             // namespace/workload
	// Security is how the edge's connections went (mutual_tls, local,
	// none; several comma-separated), --by edge only.
	Security string `json:"security,omitempty"`
	// Open are the connections open at the second read.
	Open float64 `json:"open"`
	// NewPerSec are connections opened per second between the reads.
	NewPerSec float64 `json:"newPerSecond"`
	// ReceivedPerSec and SentPerSec are the bytes per second, toward the
	// callee and back, of the connections that ended between the reads.
	ReceivedPerSec float64 `json:"receivedBytesPerSecond"`
	SentPerSec     float64 `json:"sentBytesPerSecond"`
	// Requests are the HTTP requests proxied per request between the
	// reads (nil when none).
	Requests *RequestStat `json:"requests,omitempty"`
}

// RequestStat is a row's requests between the reads.
type RequestStat struct {
	PerSec float64 `json:"perSecond"`
	// SuccessRate is the share answered with a status below 500.
	SuccessRate float64 `json:"successRate"`
	// P50, P95 and P99 are latency percentiles in milliseconds, estimated
	// from the histogram's buckets (linear within a bucket).
	P50 float64 `json:"p50Ms"`
	P95 float64 `json:"p95Ms"`
	P99 float64 `json:"p99Ms"`
}

func stat(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseStatFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	eps, err := newEndpoints("ztunnel metrics ", f.sources, f.timeout)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl stat:", err)
		return 2
	}
	before, err := readAll(ctx, eps)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl stat:", err)
		return 1
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 1
	case <-time.After(f.interval):
	}
	after, err := readAll(ctx, eps)
	if err != nil {
		fmt.Fprintln(stderr, "meshctl stat:", err)
		return 1
	}
	rows := statRows(before, after, time.Since(start), f.by, f.namespace)
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			fmt.Fprintln(stderr, "meshctl stat:", err)
			return 1
		}
		return 0
	}
	printStat(stdout, rows, f.by, f.interval)
	return 0
}

// series is one labelled series of the four counters.
type series struct {
	labels map[string]string
	values [4]float64 // opened, closed, received, sent
}

// reqSeries is one labelled series of the request histogram.
type reqSeries struct {
	labels  map[string]string
	count   float64
	buckets map[float64]float64 // upper bound -> cumulative count (+Inf included)
}

// sample is every node's series, keyed by their labels plus the node's
// index (counters of different nodes are kept apart, so that a reset on
// one node is seen).
type sample struct {
	tcp map[string]*series
	req map[string]*reqSeries
}

// readAll reads every endpoint's counters.
func readAll(ctx context.Context, eps []*endpoint) (sample, error) {
	out := sample{tcp: map[string]*series{}, req: map[string]*reqSeries{}}
	for i, e := range eps {
		if err := readMetrics(ctx, e, i, out); err != nil {
			return sample{}, err
		}
	}
	return out, nil
}

// readMetrics reads one endpoint's agentmesh_tcp_* series into out.
func readMetrics(ctx context.Context, e *endpoint, node int, out sample) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s unreachable: %w", e.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", e.name, resp.Status)
	}
	dec := expfmt.NewDecoder(io.LimitReader(resp.Body, 64<<20), expfmt.ResponseFormat(resp.Header))
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: decode metrics: %w", e.name, err)
		}
		idx := slices.Index([]string{tcpOpened, tcpClosed, tcpReceived, tcpSent}, mf.GetName())
		if idx < 0 && mf.GetName() != reqDuration {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			var key strings.Builder
			fmt.Fprintf(&key, "%d", node)
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for _, k := range slices.Sorted(maps.Keys(labels)) {
				fmt.Fprintf(&key, "\x00%s=%s", k, labels[k])
			}
			if idx < 0 {
				h := m.GetHistogram()
				rs := &reqSeries{labels: labels, count: float64(h.GetSampleCount()), buckets: map[float64]float64{math.Inf(1): float64(h.GetSampleCount())}}
				for _, b := range h.GetBucket() {
					rs.buckets[b.GetUpperBound()] = float64(b.GetCumulativeCount())
				}
				out.req[key.String()] = rs
				continue
			}
			s := out.tcp[key.String()]
			if s == nil {
				s = &series{labels: labels}
				out.tcp[key.String()] = s
			}
			s.values[idx] = m.GetCounter().GetValue()
		}
	}
}

// statRows turns two samples taken d apart into rows, by workload (the
// destination reporter's series) or by edge (the source reporter's).
func statRows(before, after sample, d time.Duration, by, namespace string) []StatRow {
	reporter := "destination"
	if by == "edge" {
		reporter = "source"
	}
	rows := map[string]*StatRow{}
	security := map[string]map[string]bool{}
	secs := d.Seconds()
	// row finds the row of a series with labels l (nil: not shown).
	row := func(l map[string]string) (*StatRow, string) {
		if l["reporter"] != reporter {
			return nil, ""
		}
		to := l["destination_namespace"] + "/" + l["destination_workload"]
		from := l["source_namespace"] + "/" + l["source_workload"]
		ns := l["destination_namespace"]
		rk := to
		if by == "edge" {
			ns, rk = l["source_namespace"], from+"\x00"+to
		}
		if namespace != "" && ns != namespace {
			return nil, ""
		}
		r := rows[rk]
		if r == nil {
			r = &StatRow{To: to}
			if by == "edge" {
				r.From = from
				security[rk] = map[string]bool{}
			}
			rows[rk] = r
		}
		return r, rk
	}
	type reqAcc struct {
		n, ok   float64
		buckets map[float64]float64
	}
	reqs := map[*StatRow]*reqAcc{}
	for key, s := range after.req {
		r, _ := row(s.labels)
		if r == nil {
			continue
		}
		prev := before.req[key]
		reset := prev == nil || s.count < prev.count
		n := s.count
		if !reset {
			n -= prev.count
		}
		if n <= 0 {
			continue
		}
		a := reqs[r]
		if a == nil {
			a = &reqAcc{buckets: map[float64]float64{}}
			reqs[r] = a
		}
		a.n += n
		if code, err := strconv.Atoi(s.labels["response_code"]); err == nil && code > 0 && code < 500 {
			a.ok += n
		}
		for ub, c := range s.buckets {
			if !reset {
				c -= prev.buckets[ub]
			}
			a.buckets[ub] += c
		}
	}
	for r, a := range reqs {
		r.Requests = &RequestStat{PerSec: a.n / secs, SuccessRate: a.ok / a.n,
			P50: quantile(0.50, a.buckets) * 1000, P95: quantile(0.95, a.buckets) * 1000, P99: quantile(0.99, a.buckets) * 1000}
	}
	for key, s := range after.tcp {
		l := s.labels
		r, rk := row(l)
		if r == nil {
			continue
		}
		if by == "edge" {
			security[rk][l["security"]] = true
		}
		var prev [4]float64
		if b := before.tcp[key]; b != nil {
			prev = b.values
		}
		delta := func(i int) float64 {
			if s.values[i] < prev[i] { // the counter was reset (ztunnel restarted)
				return s.values[i]
			}
			return s.values[i] - prev[i]
		}
		r.Open += s.values[0] - s.values[1]
		r.NewPerSec += delta(0) / secs
		r.ReceivedPerSec += delta(2) / secs
		r.SentPerSec += delta(3) / secs
	}
	out := make([]StatRow, 0, len(rows))
	for rk, r := range rows {
		if by == "edge" {
			r.Security = strings.Join(slices.Sorted(maps.Keys(security[rk])), ",")
			if r.Security == "" {
				r.Security = "-" // requests only: their connections are not in the TCP series
			}
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b StatRow) int { return cmp.Or(cmp.Compare(a.To, b.To), cmp.Compare(a.From, b.From)) })
	return out
}

func printStat(w io.Writer, rows []StatRow, by string, interval time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if by == "edge" {
		fmt.Fprint(tw, "FROM\tTO\tSECURITY\t")
	} else {
		fmt.Fprint(tw, "WORKLOAD\t")
	}
	fmt.Fprintln(tw, "OPEN\tNEW/S\tBYTES IN/S\tBYTES OUT/S\tREQ/S\tSUCCESS\tP50\tP95\tP99")
	for _, r := range rows {
		if by == "edge" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t", r.From, r.To, r.Security)
		} else {
			fmt.Fprintf(tw, "%s\t", r.To)
		}
		fmt.Fprintf(tw, "%.0f\t%.1f\t%s\t%s\t", r.Open, r.NewPerSec, bytesRate(r.ReceivedPerSec), bytesRate(r.SentPerSec))
		if q := r.Requests; q != nil {
			fmt.Fprintf(tw, "%.1f\t%.2f%%\t%s\t%s\t%s\n", q.PerSec, q.SuccessRate*100, ms(q.P50), ms(q.P95), ms(q.P99))
		} else {
			fmt.Fprintln(tw, "-\t-\t-\t-\t-")
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "(over %s; bytes are counted when a connection ends; requests are those proxied per request)\n", interval)
}

// ms formats milliseconds.
func ms(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fms", v)
}

// quantile estimates the q-quantile of a histogram (upper bound ->
// cumulative count, +Inf included) as Prometheus' histogram_quantile
// does: linear within the bucket the rank falls in; in the +Inf bucket,
// the largest finite bound.
func quantile(q float64, buckets map[float64]float64) float64 {
	bounds := slices.Sorted(maps.Keys(buckets))
	if len(bounds) == 0 {
		return 0
	}
	total := buckets[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for _, ub := range bounds {
		c := buckets[ub]
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower
			}
			if c == prev {
				return ub
			}
			return lower + (ub-lower)*(rank-prev)/(c-prev)
		}
		lower, prev = ub, c
	}
	return lower
}

// bytesRate formats a byte rate with a binary unit.
func bytesRate(v float64) string {
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if v < 1024 || u == "GiB" {
			return fmt.Sprintf("%.1f %s", v, u)
		}
		v /= 1024
	}
	return ""
}
