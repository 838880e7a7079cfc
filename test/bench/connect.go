package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ConnectConfig is one new-connections run: Concurrency workers each open
// a connection, echo one Size-byte frame on it, close it and start over,
// until Duration has passed.
type ConnectConfig struct {
	To          string        // server address
	Concurrency int           // connections in flight at once
	Size        int           // payload bytes of the one request and response
	Duration    time.Duration // how long to start new connections
	Timeout     time.Duration // bound of one connection's dial and echo
}

func (c ConnectConfig) check() error {
	switch {
	case c.To == "":
		return errors.New("no --to address")
	case c.Concurrency < 1 || c.Concurrency > maxConns:
		return fmt.Errorf("concurrency %d not in [1, %d]", c.Concurrency, maxConns)
	case c.Size < MinFrame || c.Size > MaxFrame:
		return fmt.Errorf("size %d not in [%d, %d]", c.Size, MinFrame, MaxFrame)
	case c.Duration <= 0 || c.Duration > maxDuration:
		return fmt.Errorf("duration %v not in (0, %v]", c.Duration, maxDuration)
	case c.Timeout <= 0 || c.Timeout > maxDuration:
		return fmt.Errorf("timeout %v not in (0, %v]", c.Timeout, maxDuration)
	}
	return nil
}

// ConnectResult is what `bench-client connect` prints. Connections counts
// the connections that connected, got their echo back and were closed;
// Errors the others. PerSecond is Connections over Seconds, the time from
// the first dial until the last connection ended. The percentiles are of
// one connection's time from the start of its dial to its echo read.
type ConnectResult struct {
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
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

// RunConnect runs cfg and summarizes it. A failed connection is counted,
// not returned; the error is for a bad config or ctx ending the run.
func RunConnect(ctx context.Context, cfg ConnectConfig) (ConnectResult, error) {
	if err := cfg.check(); err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	start := time.Now()
	stop := start.Add(cfg.Duration)
	workers := make([]connectWorker, cfg.Concurrency)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() { workers[k].run(ctx, cfg, stop) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := ConnectResult{Mode: "connect", Concurrency: cfg.Concurrency, Seconds: elapsed.Seconds()}
	var samples []time.Duration
	for _, w := range workers {
		samples = append(samples, w.samples...)
		res.Errors += w.errors
		if res.FirstError == "" && w.firstErr != nil {
			res.FirstError = w.firstErr.Error()
		}
	}
	var s Summary
	summarize(&s, samples)
	res.Connections = s.Count
	res.P50us, res.P90us, res.P99us, res.Maxus = s.P50us, s.P90us, s.P99us, s.Maxus
	res.PerSecond = float64(res.Connections) / elapsed.Seconds()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	return res, nil
}

// connectWorker opens one connection after the other.
type connectWorker struct {
	samples  []time.Duration // dial start to echo, of the good ones
	errors   int
	firstErr error
}

func (w *connectWorker) run(ctx context.Context, cfg ConnectConfig, stop time.Time) {
	frame := make([]byte, 4+cfg.Size)
	var buf []byte
	d := net.Dialer{Timeout: cfg.Timeout}
	for seq := uint64(0); ctx.Err() == nil && time.Now().Before(stop); seq++ {
		putFrame(frame, seq)
		began := time.Now()
		var err error
		buf, err = dialEcho(ctx, &d, cfg, frame, buf)
		if err != nil {
			w.errors++
			if w.firstErr == nil {
				w.firstErr = err
			}
			continue
		}
		w.samples = append(w.samples, time.Since(began))
	}
}

// dialEcho dials cfg.To, writes frame, reads and checks its echo and
// closes the connection. It returns the read buffer for reuse.
func dialEcho(ctx context.Context, d *net.Dialer, cfg ConnectConfig, frame, buf []byte) ([]byte, error) {
	c, err := d.DialContext(ctx, "tcp", cfg.To)
	if err != nil {
		return buf, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
		return buf, fmt.Errorf("set deadline: %w", err)
	}
	if _, err := c.Write(frame); err != nil {
		return buf, fmt.Errorf("write: %w", err)
	}
	p, err := readFrame(bufio.NewReaderSize(c, 4+cfg.Size), buf)
	if err != nil {
		return buf, fmt.Errorf("read echo: %w", noEOF(err))
	}
	want, _ := checkPayload(frame[4:])
	if seq, ok := checkPayload(p); !ok || seq != want || len(p) != cfg.Size {
		return p, fmt.Errorf("bad echo (seq %d, %d bytes)", seq, len(p))
	}
	return p, nil
}

func connectCommand(ctx context.Context, args []string) (ConnectResult, error) {
	fs := flag.NewFlagSet(ClientCommand+" connect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg ConnectConfig
	fs.StringVar(&cfg.To, "to", "", "server address HOST:PORT")
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "connections in flight at once")
	fs.IntVar(&cfg.Size, "size", 1024, "payload bytes of the one request and response per connection")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to open new connections")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "bound of one connection's dial and echo")
	if err := fs.Parse(args); err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	return RunConnect(ctx, cfg)
}
