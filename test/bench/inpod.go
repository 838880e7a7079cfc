package bench

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

// Bounds of the warm-up: it waits for the servers to listen and for the
// mesh to have certificates and pooled connections ready.
const (
	warmUpTimeout  = 30 * time.Second
	warmUpPause    = 200 * time.Millisecond
	warmUpDuration = 200 * time.Millisecond
	warmUpRate     = 100
	clientGrace    = 2 * time.Second
	clientSlack    = 30 * time.Second // on top of a client's own time limit
	bulkTimeout    = 5 * time.Minute
)

// warmUp repeats a short latency run and a tiny bulk run until both work
// and, in a mesh scenario, went through the mesh (ztunnel on the client's
// node may not know the server pod yet right after it was added).
func warmUp(ctx context.Context, l *lab.Lab, sc Scenario, client *lab.Pod, opts Options, echo, sink netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, warmUpTimeout)
	defer cancel()
	var last error
	for try := 1; ; try++ {
		since := time.Now()
		last = warmUpOnce(ctx, client, opts, echo, sink)
		if last == nil {
			_, last = checkPath(ctx, l, sc, since, opts.Conns+1, echo, sink)
		}
		if last == nil {
			opts.Logger.Info("warmed up", "scenario", sc.Name, "tries", try)
			return nil
		}
		opts.Logger.Info("warm-up failed", "scenario", sc.Name, "try", try, "err", last)
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm up for %v: %w", warmUpTimeout, last)
		case <-time.After(warmUpPause):
		}
	}
}

func warmUpOnce(ctx context.Context, client *lab.Pod, opts Options, echo, sink netip.AddrPort) error {
	s, err := runLatencyIn(ctx, client, opts, echo, warmUpDuration, min(warmUpRate, opts.Rate))
	if err != nil {
		return err
	}
	if s.Errors > 0 {
		return fmt.Errorf("%d of %d requests failed: %s", s.Errors, s.Scheduled, s.FirstError)
	}
	opts.BulkBytes = 64 << 10
	_, err = runBulkIn(ctx, client, opts, sink)
	return err
}

// runLatencyIn runs the latency client in the client pod.
func runLatencyIn(ctx context.Context, client *lab.Pod, opts Options, to netip.AddrPort, d time.Duration, rate float64) (Summary, error) {
	args := opts.command(ClientCommand, "latency", "--to", to.String(),
		"--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--conns", strconv.Itoa(opts.Conns),
		"--size", strconv.Itoa(opts.Size), "--duration", d.String(), "--grace", clientGrace.String())
	var s Summary
	err := runJSON(ctx, client, d+clientGrace+clientSlack, args, &s)
	return s, err
}

// runBulkIn runs the bulk client in the client pod.
func runBulkIn(ctx context.Context, client *lab.Pod, opts Options, to netip.AddrPort) (BulkResult, error) {
	args := opts.command(ClientCommand, "bulk", "--to", to.String(),
		"--bytes", strconv.FormatInt(opts.BulkBytes, 10), "--timeout", bulkTimeout.String())
	var b BulkResult
	err := runJSON(ctx, client, bulkTimeout+clientSlack, args, &b)
	return b, err
}

// runJSON runs args in pod p for at most limit and decodes the last line
// of its stdout into v.
func runJSON(ctx context.Context, p *lab.Pod, limit time.Duration, args []string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := p.Run(ctx, args...)
	if err != nil {
		return fmt.Errorf("run client: %w", err)
	}
	return decodeLastLine(out, v)
}

// decodeLastLine decodes the last non-empty line of out as JSON.
func decodeLastLine(out []byte, v any) error {
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
