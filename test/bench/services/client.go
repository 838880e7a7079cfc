package services

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/test/bench/benchkube"
	"github.com/agentmesh/agentmesh/test/lab"
)

// The benchmark client's subcommand and its output, as package bench
// defines them (bench.ClientCommand, bench.Summary, bench.ConnectResult);
// this package cannot import bench, which runs it.
const clientCommand = "bench-client"

// Latency is what `bench-client latency` prints (the fields used here).
type Latency struct {
	Scheduled  int     `json:"scheduled"`
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// Connect is what `bench-client connect` prints.
type Connect struct {
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"conns_per_s"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	Maxus       float64 `json:"max_us"`
	FirstError  string  `json:"first_error,omitempty"`
}

const (
	latencyGrace = 2 * time.Second  // for late answers after the last send
	connTimeout  = 5 * time.Second  // one new connection's dial and echo
	clientSlack  = 30 * time.Second // process start and exit on a busy machine
)

// latency runs the latency client in pod p against to for d at rate.
func latency(ctx context.Context, o Options, p *lab.Pod, to netip.AddrPort, d time.Duration, rate float64) (Latency, error) {
	var out Latency
	err := benchkube.RunJSON(ctx, p, d+latencyGrace+clientSlack, &out, o.meshlab(), clientCommand, "latency",
		"--to", to.String(), "--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--conns", strconv.Itoa(o.Conns),
		"--size", strconv.Itoa(o.Size), "--duration", d.String(), "--grace", latencyGrace.String())
	return out, err
}

// connect runs the new-connections client in pod p against to for d with
// k connections at once.
func connect(ctx context.Context, o Options, p *lab.Pod, to netip.AddrPort, d time.Duration, k int) (Connect, error) {
	var out Connect
	err := benchkube.RunJSON(ctx, p, d+connTimeout+clientSlack, &out, o.meshlab(), clientCommand, "connect",
		"--to", to.String(), "--concurrency", strconv.Itoa(k), "--size", strconv.Itoa(o.Size),
		"--duration", d.String(), "--timeout", connTimeout.String())
	return out, err
}
