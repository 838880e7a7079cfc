package meshlab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BurstResult is what `app burst` prints.
type BurstResult struct {
	To    string `json:"to"`
	Conns int    `json:"conns"`
	// Echoed counts connections that connected and got their payload back.
	Echoed int `json:"echoed"`
	// Failed counts the others; Errors groups them by message, most common first.
	Failed int          `json:"failed"`
	Errors []BurstError `json:"errors,omitempty"`
	// DialSeconds is how long it took to start every dial; AllEchoedMS is
	// the time from the first dial to the last echo.
	DialSeconds float64 `json:"dial_seconds"`
	AllEchoedMS float64 `json:"all_echoed_ms"`
	// EchoP50MS, EchoP99MS and EchoMaxMS are per connection: dial to echo.
	EchoP50MS float64 `json:"echo_p50_ms"`
	EchoP99MS float64 `json:"echo_p99_ms"`
	EchoMaxMS float64 `json:"echo_max_ms"`
	// FailP50MS and FailMaxMS are how long the failed ones took to fail:
	// a refusal should be fast.
	FailP50MS float64 `json:"fail_p50_ms,omitempty"`
	FailMaxMS float64 `json:"fail_max_ms,omitempty"`
	// BrokenWhileHeld counts echoed connections that the peer closed or
	// reset before the hold ended.
	BrokenWhileHeld int `json:"broken_while_held"`
}

// BurstError is one kind of failure and how often it happened.
type BurstError struct {
	Error string `json:"error"`
	Count int    `json:"count"`
}

// appBurst is `app burst --to ADDR --conns N --hold D`: open N connections
// at once, send a few bytes on each and read the echo, keep every
// connection open until --hold after the first dial, then close them all
// and print a JSON summary. It exits non-zero only on bad usage: the
// summary says how many failed.
func appBurst(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app burst", flag.ContinueOnError)
	to := fs.String("to", "", "echo server address (host:port)")
	conns := fs.Int("conns", 1000, "connections to open at once")
	hold := fs.Duration("hold", 10*time.Second, "keep the connections open until this long after the first dial")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on a connection's dial and echo after")
	payload := fs.String("payload", "burst-8b", "bytes each connection sends")
	concurrency := fs.Int("concurrency", 0, "at most this many connections at once, each closed after its echo (--hold ignored); 0: all at once")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" || *conns < 1 || *payload == "" || *concurrency < 0 {
		return fmt.Errorf("%w: --to, a positive --conns, a payload and a --concurrency >= 0 are required", ErrUsage)
	}
	if *concurrency > 0 {
		return writeJSON(stdout, paced(ctx, *to, *conns, *concurrency, *timeout, []byte(*payload)))
	}
	return writeJSON(stdout, burst(ctx, *to, *conns, *hold, *timeout, []byte(*payload)))
}

// burstConn is the outcome of one connection.
type burstConn struct {
	took   time.Duration // dial to echo, or to failure
	err    error
	broken bool // echoed, then ended by the peer before the hold ended
}

// burst runs the connections and summarises them.
func burst(ctx context.Context, to string, n int, hold, timeout time.Duration, payload []byte) BurstResult {
	start := time.Now()
	release := start.Add(hold)
	out := make([]burstConn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = burstOne(ctx, to, payload, timeout, release) })
	}
	dialed := time.Since(start)
	wg.Wait()
	return summarise(to, out, dialed)
}

// paced runs n connections, at most k at once, each closed after its echo.
func paced(ctx context.Context, to string, n, k int, timeout time.Duration, payload []byte) BurstResult {
	start := time.Now()
	out := make([]burstConn, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(k, n) {
		wg.Go(func() {
			for i := range next {
				out[i] = burstOne(ctx, to, payload, timeout, time.Time{})
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return summarise(to, out, time.Since(start))
}

// burstOne dials, exchanges payload, and holds the connection until
// release (zero: not at all).
func burstOne(ctx context.Context, to string, payload []byte, timeout time.Duration, release time.Time) burstConn {
	begin := time.Now()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", to)
	if err != nil {
		return burstConn{took: time.Since(begin), err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(begin.Add(timeout))
	if _, err := c.Write(payload); err != nil {
		return burstConn{took: time.Since(begin), err: fmt.Errorf("write: %w", err)}
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return burstConn{took: time.Since(begin), err: fmt.Errorf("read echo: %w", err)}
	}
	res := burstConn{took: time.Since(begin)}
	if string(got) != string(payload) {
		res.err = errors.New("echo differs from payload")
		return res
	}
	if release.IsZero() {
		return res // no hold
	}
	// Hold: a read that ends before the deadline means the peer ended it.
	_ = c.SetReadDeadline(release)
	var one [1]byte
	_, err = c.Read(one[:])
	var ne net.Error
	res.broken = !errors.As(err, &ne) || !ne.Timeout()
	return res
}

func summarise(to string, out []burstConn, dialed time.Duration) BurstResult {
	r := BurstResult{To: to, Conns: len(out), DialSeconds: dialed.Seconds()}
	var ok, failed []time.Duration
	errs := map[string]int{}
	for _, c := range out {
		if c.err != nil {
			failed = append(failed, c.took)
			errs[errClass(c.err)]++
			continue
		}
		ok = append(ok, c.took)
		if c.broken {
			r.BrokenWhileHeld++
		}
	}
	r.Echoed, r.Failed = len(ok), len(failed)
	slices.Sort(ok)
	slices.Sort(failed)
	if len(ok) > 0 {
		r.EchoP50MS, r.EchoP99MS, r.EchoMaxMS = ms(pct(ok, 50)), ms(pct(ok, 99)), ms(ok[len(ok)-1])
		r.AllEchoedMS = r.EchoMaxMS
	}
	if len(failed) > 0 {
		r.FailP50MS, r.FailMaxMS = ms(pct(failed, 50)), ms(failed[len(failed)-1])
	}
	for e, c := range errs {
		r.Errors = append(r.Errors, BurstError{Error: e, Count: c})
	}
	sort.Slice(r.Errors, func(i, j int) bool {
		if r.Errors[i].Count != r.Errors[j].Count {
			return r.Errors[i].Count > r.Errors[j].Count
		}
		return r.Errors[i].Error < r.Errors[j].Error
	})
	return r
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// errClass drops the addresses from a dial or read error so that equal
// failures group: "read echo: connection reset by peer".
func errClass(err error) string {
	var errno syscall.Errno
	prefix := ""
	if s := err.Error(); strings.HasPrefix(s, "write: ") || strings.HasPrefix(s, "read echo: ") {
		prefix = s[:strings.Index(s, ": ")+2]
	}
	switch {
	case errors.As(err, &errno):
		return prefix + errno.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return prefix + "EOF"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return prefix + "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return prefix + "timeout"
	}
	return err.Error()
}
