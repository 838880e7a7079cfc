package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// LatencyConfig is one open-loop latency run.
type LatencyConfig struct {
	To       string        // server address
	Rate     float64       // requests per second over all connections
	Conns    int           // persistent connections
	Size     int           // payload bytes per request and response
	Duration time.Duration // sending time
	Grace    time.Duration // extra time for late responses
}

func (c LatencyConfig) check() error {
	switch {
	case c.To == "":
		return errors.New("no --to address")
	case c.Rate <= 0 || c.Rate > maxRate:
		return fmt.Errorf("rate %v not in (0, %d]", c.Rate, maxRate)
	case c.Conns < 1 || c.Conns > maxConns:
		return fmt.Errorf("conns %d not in [1, %d]", c.Conns, maxConns)
	case c.Size < MinFrame || c.Size > MaxFrame:
		return fmt.Errorf("size %d not in [%d, %d]", c.Size, MinFrame, MaxFrame)
	case c.Duration <= 0 || c.Duration > maxDuration:
		return fmt.Errorf("duration %v not in (0, %v]", c.Duration, maxDuration)
	case c.Grace < 0 || c.Grace > maxDuration:
		return fmt.Errorf("grace %v not in [0, %v]", c.Grace, maxDuration)
	case c.requests() > maxRequests:
		return fmt.Errorf("%d requests over %d", c.requests(), maxRequests)
	}
	return nil
}

func (c LatencyConfig) requests() int { return int(c.Rate * c.Duration.Seconds()) }

// schedule is the open-loop plan: request j is due at start + j/rate, on
// connection j mod conns. The writer never waits for responses. A request
// sent on time is measured from its send; one sent late because the writer
// was still busy with earlier ones (a write blocked on a full socket:
// backpressure from the server or the mesh) is measured from its due time,
// so a slow server cannot hide its delay by holding the client back
// (coordinated omission). The client's own timer wake-up jitter (up to
// about a millisecond with Go timers) is not counted.
type schedule struct {
	start time.Time
	rate  float64
	total int
	conns int
}

func (s schedule) due(j int) time.Time {
	return s.start.Add(time.Duration(float64(j) * float64(time.Second) / s.rate))
}

// RunLatency dials cfg.Conns connections, sends cfg.Rate requests per
// second for cfg.Duration and summarizes the latencies. Requests without a
// correct response are errors. It returns an error only when it could not
// start (bad config, no connection) or ctx ended it.
func RunLatency(ctx context.Context, cfg LatencyConfig) (Summary, error) {
	if err := cfg.check(); err != nil {
		return Summary{}, fmt.Errorf("latency: %w", err)
	}
	conns, err := dialAll(ctx, cfg.To, cfg.Conns)
	if err != nil {
		return Summary{}, err
	}
	s := schedule{start: time.Now(), rate: cfg.Rate, total: cfg.requests(), conns: cfg.Conns}
	deadline := s.start.Add(cfg.Duration + cfg.Grace)
	runs := make([]connRun, len(conns))
	var wg sync.WaitGroup
	for k, c := range conns {
		runs[k] = connRun{conn: c, sched: s, first: k, size: cfg.Size}
		wg.Go(func() { runs[k].run(ctx, deadline) })
	}
	wg.Wait()
	sum := Summary{Mode: "latency", Scheduled: s.total}
	var samples []time.Duration
	for _, r := range runs {
		samples = append(samples, r.samples...)
		sum.Behind += r.behind
		if sum.FirstError == "" && r.err != nil {
			sum.FirstError = r.err.Error()
		}
	}
	summarize(&sum, samples)
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("latency: %w", err)
	}
	return sum, nil
}

func dialAll(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// connRun sends requests first, first+conns, ... on one connection from a
// writer goroutine and reads the echoes in order in the calling one.
type connRun struct {
	conn    net.Conn
	sched   schedule
	first   int
	size    int
	sent    chan time.Time  // when each request's clock started, in order
	behind  int             // requests sent after their due time; owned by write
	samples []time.Duration // owned by read
	err     error           // first failure, set by run
}

func (r *connRun) run(ctx context.Context, deadline time.Time) {
	defer r.conn.Close()
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	if err := r.conn.SetDeadline(deadline); err != nil {
		r.err = fmt.Errorf("set deadline: %w", err)
		return
	}
	r.sent = make(chan time.Time, (r.sched.total-r.first+r.sched.conns-1)/r.sched.conns)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() { werr = r.write(ctx) })
	r.err = r.read()
	r.conn.Close() // unblocks the writer when reading failed
	wg.Wait()
	if r.err == nil {
		r.err = werr
	}
}

func (r *connRun) write(ctx context.Context) error {
	frame := make([]byte, 4+r.size)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for j := r.first; j < r.sched.total; j += r.sched.conns {
		due := r.sched.due(j)
		late, err := sleepUntil(ctx, timer, due)
		if err != nil {
			return err
		}
		clock := time.Now()
		if late {
			clock = due
			r.behind++
		}
		r.sent <- clock
		putFrame(frame, uint64(j))
		if _, err := r.conn.Write(frame); err != nil {
			return fmt.Errorf("write request %d: %w", j, err)
		}
	}
	return nil
}

func (r *connRun) read() error {
	br := bufio.NewReaderSize(r.conn, 64<<10)
	var buf []byte
	for j := r.first; j < r.sched.total; j += r.sched.conns {
		p, err := readFrame(br, buf)
		if err != nil {
			return fmt.Errorf("read response %d: %w", j, noEOF(err))
		}
		buf = p
		now := time.Now()
		if seq, ok := checkPayload(p); !ok || seq != uint64(j) || len(p) != r.size {
			return fmt.Errorf("response %d: bad echo (seq %d, %d bytes)", j, seq, len(p))
		}
		r.samples = append(r.samples, now.Sub(<-r.sent))
	}
	return nil
}

// putFrame fills frame (4-byte header and payload) for request seq.
func putFrame(frame []byte, seq uint64) {
	p := frame[4:]
	frame[0], frame[1], frame[2], frame[3] = byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	fillPayload(p, seq)
}

// sleepUntil waits until t or ctx is done. If t has passed already it
// does not wait and reports late.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) (late bool, err error) {
	d := time.Until(t)
	if d <= 0 {
		return true, ctx.Err()
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
