package meshlab

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"
)

// DialAttempt is the line `app dialer` prints for every connection.
type DialAttempt struct {
	At    time.Time `json:"at"` // when the connect began
	OK    bool      `json:"ok"`
	MS    float64   `json:"ms"`              // connect and round trip
	Local string    `json:"local,omitempty"` // the connection's own address, once connected
	Error string    `json:"error,omitempty"`
}

// DialSummary is the line `app dialer` prints last.
type DialSummary struct {
	To       string `json:"to"`
	Attempts int    `json:"attempts"`
	OK       int    `json:"ok"`
	Failed   int    `json:"failed"`
}

// appDialer is `app dialer --to ADDR --interval I --duration D --timeout
// T`: a new connection to an echo server every interval, each one short
// round trip, printing a JSON DialAttempt per connection and a
// DialSummary at the end. Attempts run one at a time (a slow one delays
// the next); each is bounded by the timeout. It runs for the duration or
// until stopped (SIGTERM); failed connections are what it reports, not
// an error.
func appDialer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app dialer", flag.ContinueOnError)
	to := fs.String("to", "", "echo server address (host:port)")
	interval := fs.Duration("interval", 30*time.Millisecond, "time between new connections")
	duration := fs.Duration("duration", time.Minute, "how long to run (or until SIGTERM)")
	timeout := fs.Duration("timeout", 2*time.Second, "bound of one connection")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" || *interval <= 0 || *timeout <= 0 {
		return fmt.Errorf("%w: --to and a positive --interval and --timeout are required", ErrUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	sum, err := dialLoop(ctx, *to, *interval, *timeout, func(a DialAttempt) error { return writeJSON(stdout, a) })
	if err != nil {
		return err
	}
	return writeJSON(stdout, sum)
}

// dialLoop makes a connection every interval until ctx ends and reports
// each; it stops early only when report fails.
func dialLoop(ctx context.Context, to string, interval, timeout time.Duration, report func(DialAttempt) error) (DialSummary, error) {
	sum := DialSummary{To: to}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		a := dialOnce(ctx, to, timeout, fmt.Sprintf("dial %d\n", n))
		sum.Attempts++
		if a.OK {
			sum.OK++
		} else {
			sum.Failed++
		}
		if err := report(a); err != nil {
			return sum, err
		}
		if ctx.Err() != nil { // not left to select: a due tick would win half the time
			return sum, nil
		}
		select {
		case <-ctx.Done():
			return sum, nil
		case <-tick.C:
		}
	}
}

// dialOnce does one round trip, bounded by timeout but not cut short
// when ctx ends (a stop is not a failed connection).
func dialOnce(ctx context.Context, to string, timeout time.Duration, payload string) DialAttempt {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	a := DialAttempt{At: time.Now()}
	res := send(ctx, to, []byte(payload))
	a.OK, a.Local, a.Error = res.Error == "", res.Local, res.Error
	a.MS = ms(time.Since(a.At))
	return a
}

// ParseDialAttempts reads the attempt lines of `app dialer` output.
func ParseDialAttempts(out []byte) []DialAttempt {
	var as []DialAttempt
	for _, line := range bytes.Split(out, []byte("\n")) {
		var a DialAttempt
		if json.Unmarshal(line, &a) == nil && !a.At.IsZero() {
			as = append(as, a)
		}
	}
	return as
}
