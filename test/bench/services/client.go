package services

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

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
	err := runJSON(ctx, p, d+latencyGrace+clientSlack, &out, o.meshlab(), clientCommand, "latency",
		"--to", to.String(), "--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--conns", strconv.Itoa(o.Conns),
		"--size", strconv.Itoa(o.Size), "--duration", d.String(), "--grace", latencyGrace.String())
	return out, err
}

// connect runs the new-connections client in pod p against to for d with
// k connections at once.
func connect(ctx context.Context, o Options, p *lab.Pod, to netip.AddrPort, d time.Duration, k int) (Connect, error) {
	var out Connect
	err := runJSON(ctx, p, d+connTimeout+clientSlack, &out, o.meshlab(), clientCommand, "connect",
		"--to", to.String(), "--concurrency", strconv.Itoa(k), "--size", strconv.Itoa(o.Size),
		"--duration", d.String(), "--timeout", connTimeout.String())
	return out, err
}

// runJSON runs args in pod p for at most limit and decodes the last line
// of its stdout into v.
func runJSON(ctx context.Context, p *lab.Pod, limit time.Duration, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := p.Run(ctx, args...)
	if err != nil {
		return fmt.Errorf("run %s %s: %w", clientCommand, args[2], err)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	last := lines[len(lines)-1]
	if len(last) == 0 {
		return errors.New("client printed nothing")
	}
	if err := json.Unmarshal(last, v); err != nil {
		return fmt.Errorf("decode client output %q: %w", last, err)
	}
	return nil
}
