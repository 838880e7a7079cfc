package meshlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// StreamStats is what `app stream` prints.
type StreamStats struct {
	To       string  `json:"to"`
	Sent     int     `json:"sent"`
	Echoed   int     `json:"echoed"`
	AvgRTTMS float64 `json:"avg_rtt_ms"`
	MaxRTTMS float64 `json:"max_rtt_ms"`
	Seconds  float64 `json:"seconds"`
	// BrokenAt is the number of the message during which the connection
	// broke (0 when it did not).
	BrokenAt int    `json:"broken_at,omitempty"`
	Error    string `json:"error,omitempty"`
}

// appStream is `app stream --to ADDR --duration D --interval I
// [--progress]`: one long-lived connection to an echo server, a numbered
// message every interval, each echo checked. It runs for the duration or
// until stopped (SIGTERM), prints JSON stats (with --progress also once
// after the first echo) and fails when the connection breaks.
func appStream(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app stream", flag.ContinueOnError)
	to := fs.String("to", "", "echo server address (host:port)")
	duration := fs.Duration("duration", 10*time.Second, "how long to stream")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between messages")
	progress := fs.Bool("progress", false, "also print the stats once, after the first echo (the stream is up)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" || *interval <= 0 {
		return fmt.Errorf("%w: --to and a positive --interval are required", ErrUsage)
	}
	var up func(StreamStats)
	if *progress {
		up = func(st StreamStats) { _ = writeJSON(stdout, st) }
	}
	st := stream(ctx, *to, *duration, *interval, up)
	if err := writeJSON(stdout, st); err != nil {
		return err
	}
	if st.Error != "" {
		return fmt.Errorf("stream broke at message %d: %s", st.BrokenAt, st.Error)
	}
	return nil
}

// stream runs the exchange and collects stats; up, if not nil, gets
// them after the first echo.
func stream(ctx context.Context, to string, duration, interval time.Duration, up func(StreamStats)) (st StreamStats) {
	st = StreamStats{To: to}
	start := time.Now()
	defer func() { st.Seconds = time.Since(start).Seconds() }()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", to)
	if err != nil {
		st.BrokenAt, st.Error = 1, "connect: "+err.Error()
		return st
	}
	defer c.Close()
	r := bufio.NewReader(c)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.After(duration)
	var total time.Duration
	for n := 1; ; n++ {
		rtt, err := exchange(c, r, n, max(interval, time.Second)*5)
		if err != nil {
			st.BrokenAt, st.Error = n, err.Error()
			break
		}
		st.Sent, st.Echoed = n, n
		total += rtt
		st.MaxRTTMS = max(st.MaxRTTMS, ms(rtt))
		st.AvgRTTMS = ms(total) / float64(n)
		if n == 1 && up != nil {
			st.Seconds = time.Since(start).Seconds()
			up(st)
		}
		select {
		case <-ctx.Done():
			return st
		case <-end:
			return st
		case <-tick.C:
		}
	}
	return st
}

// exchange sends message n and checks its echo within timeout.
func exchange(c net.Conn, r *bufio.Reader, n int, timeout time.Duration) (time.Duration, error) {
	msg := fmt.Sprintf("msg %d", n)
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("connection closed by peer")
		}
		return 0, fmt.Errorf("read echo: %w", err)
	}
	if got := strings.TrimSuffix(line, "\n"); got != msg {
		return 0, fmt.Errorf("echo %q, want %q", got, msg)
	}
	return time.Since(start), nil
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// LastStreamStats is the last stats line in `app stream` output.
func LastStreamStats(out []byte) (StreamStats, bool) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var st StreamStats
		if json.Unmarshal(lines[i], &st) == nil && st.To != "" {
			return st, true
		}
	}
	return StreamStats{}, false
}
