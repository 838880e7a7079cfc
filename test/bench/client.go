package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"
)

// ClientCommand is the meshlab subcommand that runs Client.
const ClientCommand = "bench-client"

// Limits that keep one client run bounded in time and memory.
const (
	maxRate     = 200_000
	maxConns    = 1024
	maxDuration = 10 * time.Minute
	maxRequests = 10_000_000
)

// Client runs the load generator and prints one JSON object to stdout:
//
//	latency --to ADDR [--rate R] [--conns C] [--size S] [--duration D] [--grace G]
//	bulk    --to ADDR [--bytes N] [--timeout T]
//	hold    --to ADDR [--conns N] [--size S] [--hold D]
//	connect --to ADDR [--concurrency K] [--size S] [--duration D] [--timeout T]
//
// latency prints a Summary, bulk a BulkResult, hold two HoldResult lines,
// connect a ConnectResult.
func Client(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: want a mode: latency, bulk, hold or connect", ClientCommand)
	}
	var out any
	var err error
	switch args[0] {
	case "hold":
		return holdCommand(ctx, args[1:], stdout)
	case "latency":
		out, err = latencyCommand(ctx, args[1:])
	case "bulk":
		out, err = bulkCommand(ctx, args[1:])
	case "connect":
		out, err = connectCommand(ctx, args[1:])
	default:
		return fmt.Errorf("%s: unknown mode %q", ClientCommand, args[0])
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(out)
}

func latencyCommand(ctx context.Context, args []string) (Summary, error) {
	fs := flag.NewFlagSet(ClientCommand+" latency", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg LatencyConfig
	fs.StringVar(&cfg.To, "to", "", "server address HOST:PORT")
	fs.Float64Var(&cfg.Rate, "rate", 500, "requests per second, all connections together")
	fs.IntVar(&cfg.Conns, "conns", 8, "persistent connections")
	fs.IntVar(&cfg.Size, "size", 1024, "payload bytes of each request and response")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to send")
	fs.DurationVar(&cfg.Grace, "grace", 2*time.Second, "how long to wait for late responses after the last send")
	if err := fs.Parse(args); err != nil {
		return Summary{}, fmt.Errorf("latency: %w", err)
	}
	return RunLatency(ctx, cfg)
}

func bulkCommand(ctx context.Context, args []string) (BulkResult, error) {
	fs := flag.NewFlagSet(ClientCommand+" bulk", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg BulkConfig
	fs.StringVar(&cfg.To, "to", "", "server address HOST:PORT")
	fs.Int64Var(&cfg.Bytes, "bytes", 256<<20, "bytes to send")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return BulkResult{}, fmt.Errorf("bulk: %w", err)
	}
	return RunBulk(ctx, cfg)
}
