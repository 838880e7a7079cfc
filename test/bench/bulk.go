package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// BulkConfig is one single-stream throughput run.
type BulkConfig struct {
	To      string        // server address (a --discard server)
	Bytes   int64         // bytes to send
	Timeout time.Duration // whole-run limit
}

// RunBulk sends cfg.Bytes over one connection and measures from the first
// byte written until the server's acknowledgement that all of them arrived.
func RunBulk(ctx context.Context, cfg BulkConfig) (BulkResult, error) {
	switch {
	case cfg.To == "":
		return BulkResult{}, errors.New("bulk: no --to address")
	case cfg.Bytes <= 0 || cfg.Bytes > MaxBulk:
		return BulkResult{}, fmt.Errorf("bulk: bytes %d not in (0, %d]", cfg.Bytes, int64(MaxBulk))
	case cfg.Timeout <= 0:
		return BulkResult{}, fmt.Errorf("bulk: timeout %v not positive", cfg.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", cfg.To)
	if err != nil {
		return BulkResult{}, fmt.Errorf("bulk: dial %s: %w", cfg.To, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	start := time.Now()
	if err := send(c, cfg.Bytes); err != nil {
		return BulkResult{}, fmt.Errorf("bulk: %w", ctxOr(ctx, err))
	}
	got, err := readCount(c)
	if err != nil {
		return BulkResult{}, fmt.Errorf("bulk: read ack: %w", ctxOr(ctx, noEOF(err)))
	}
	elapsed := time.Since(start)
	if got != cfg.Bytes {
		return BulkResult{}, fmt.Errorf("bulk: server got %d of %d bytes", got, cfg.Bytes)
	}
	return BulkResult{Mode: "bulk", Bytes: got, Seconds: elapsed.Seconds(), Gbps: gbps(got, elapsed)}, nil
}

// send writes the count header and then n bytes.
func send(c net.Conn, n int64) error {
	if err := writeCount(c, n); err != nil {
		return fmt.Errorf("write count: %w", err)
	}
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < n; {
		k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(k)
		if err != nil {
			return fmt.Errorf("write after %d bytes: %w", sent, err)
		}
	}
	return nil
}

// ctxOr prefers the context's error (timeout, cancel) over the closed
// connection it caused.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}
