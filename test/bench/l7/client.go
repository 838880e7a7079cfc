package l7

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/test/bench/benchkube"
)

// ClientCommand is the meshlab subcommand that runs Client.
const ClientCommand = "bench-l7-client"

// Limits that keep one client run bounded.
const (
	maxRate     = 50_000
	maxConns    = 256
	maxSize     = 1 << 20
	maxDuration = 10 * time.Minute
)

// HTTPConfig is one open-loop run of HTTP/1.1 keep-alive requests.
type HTTPConfig struct {
	URL      string        // POSTed to; the server echoes the body
	Rate     float64       // requests per second, all connections together
	Conns    int           // keep-alive connections (one worker each)
	Size     int           // body bytes each way
	Duration time.Duration // sending time
	Grace    time.Duration // extra time for late responses
}

func (c HTTPConfig) check() error {
	switch {
	case c.URL == "":
		return errors.New("no --url")
	case c.Rate <= 0 || c.Rate > maxRate:
		return fmt.Errorf("rate %v not in (0, %d]", c.Rate, maxRate)
	case c.Conns < 1 || c.Conns > maxConns:
		return fmt.Errorf("conns %d not in [1, %d]", c.Conns, maxConns)
	case c.Size < 0 || c.Size > maxSize:
		return fmt.Errorf("size %d not in [0, %d]", c.Size, maxSize)
	case c.Duration <= 0 || c.Duration > maxDuration:
		return fmt.Errorf("duration %v not in (0, %v]", c.Duration, maxDuration)
	case c.Grace < 0 || c.Grace > maxDuration:
		return fmt.Errorf("grace %v not in [0, %v]", c.Grace, maxDuration)
	}
	return nil
}

// HTTPResult is what `bench-l7-client http` prints.
type HTTPResult struct {
	Scheduled int `json:"scheduled"`
	Count     int `json:"count"` // answered 200 with the body echoed
	Errors    int `json:"errors"`
	// Behind counts requests that waited for a free connection past
	// their due time (measured from the due time).
	Behind int `json:"behind"`
	// Dials is how many connections the client opened: Conns when
	// keep-alive held.
	Dials      int     `json:"dials"`
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// RunHTTP sends cfg.Rate requests per second for cfg.Duration over
// cfg.Conns kept-alive connections, open loop: request j is due at
// start + j/rate and goes to the first idle connection; a request that
// finds every connection busy waits, and its latency counts from its due
// time, so a slow server cannot hide its delay by holding the client back.
// It returns an error only when ctx ended the run or cfg is bad.
func RunHTTP(ctx context.Context, cfg HTTPConfig) (HTTPResult, error) {
	if err := cfg.check(); err != nil {
		return HTTPResult{}, fmt.Errorf("http: %w", err)
	}
	total := int(cfg.Rate * cfg.Duration.Seconds())
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.Grace)
	defer cancel()
	var dials atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			dials.Add(1)
		}
	}}
	body := bytes.Repeat([]byte("a"), cfg.Size)
	jobs := make(chan time.Time, total)
	res := HTTPResult{Scheduled: total}
	w := make([]httpWorker, cfg.Conns)
	var wg sync.WaitGroup
	for k := range w {
		w[k].client = newClient()
		wg.Go(func() { w[k].run(httptrace.WithClientTrace(ctx, trace), cfg.URL, body, jobs) })
	}
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var serr error
	for j := range total {
		due := start.Add(time.Duration(float64(j) * float64(time.Second) / cfg.Rate))
		clock := due
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
				clock = time.Now()
			case <-ctx.Done():
				serr = ctx.Err()
			}
		}
		if serr != nil {
			break
		}
		jobs <- clock
	}
	close(jobs)
	wg.Wait()
	var samples []time.Duration
	for _, x := range w {
		samples = append(samples, x.samples...)
		res.Behind += x.behind
		if res.FirstError == "" && x.err != nil {
			res.FirstError = x.err.Error()
		}
		x.client.CloseIdleConnections()
	}
	res.Count, res.Errors, res.Dials = len(samples), total-len(samples), int(dials.Load())
	res.P50us, res.P90us, res.P99us, res.Maxus = percentiles(samples)
	if err := parent.Err(); err != nil {
		return res, fmt.Errorf("http: %w", err)
	}
	return res, nil
}

// newClient is an HTTP client with one connection of its own, kept alive.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		DisableCompression: true, IdleConnTimeout: time.Minute}}
}

// mcpClient is an HTTP client of one MCP session: the standalone SSE
// stream (GET) holds a connection of its own beside the calls' POSTs.
func mcpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, DisableCompression: true, IdleConnTimeout: time.Minute}}
}

// httpWorker sends the requests it takes, one at a time, on its client's
// connection.
type httpWorker struct {
	client  *http.Client
	samples []time.Duration
	behind  int
	err     error
}

// behindSlack: a request taken this long after its clock started waited
// for the worker (the scheduler's hand-off itself takes microseconds).
const behindSlack = 200 * time.Microsecond

func (w *httpWorker) run(ctx context.Context, url string, body []byte, jobs <-chan time.Time) {
	buf := make([]byte, len(body)+1)
	for clock := range jobs {
		if ctx.Err() != nil {
			continue // drain: counted as errors
		}
		if time.Since(clock) > behindSlack {
			w.behind++
		}
		if err := w.do(ctx, url, body, buf); err != nil {
			if w.err == nil {
				w.err = err
			}
			continue
		}
		w.samples = append(w.samples, time.Since(clock))
	}
}

func (w *httpWorker) do(ctx context.Context, url string, body, buf []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, buf)
	if err != io.ErrUnexpectedEOF && err != nil && !(err == io.EOF && len(body) == 0) {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK || n != len(body) || !bytes.Equal(buf[:n], body) {
		return fmt.Errorf("status %d, %d of %d bytes echoed", resp.StatusCode, n, len(body))
	}
	return nil
}

// connectTimeout bounds opening one MCP session (initialize).
const connectTimeout = 15 * time.Second

// MCPConfig is one closed-loop run of MCP tools/call.
type MCPConfig struct {
	URL      string        // the MCP endpoint (streamable HTTP)
	Sessions int           // MCP sessions, each calling in a loop
	Duration time.Duration // how long to call
}

// MCPResult is what `bench-l7-client mcp` prints.
type MCPResult struct {
	Sessions   int     `json:"sessions"`
	Calls      int     `json:"calls"` // answered with the tool's text
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"calls_per_s"`
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// RunMCP opens cfg.Sessions MCP sessions (go-sdk client, streamable
// HTTP) and has each call tool MCPTool back to back for cfg.Duration.
// A session that cannot be opened fails the run.
func RunMCP(ctx context.Context, cfg MCPConfig) (MCPResult, error) {
	if cfg.URL == "" || cfg.Sessions < 1 || cfg.Sessions > maxConns || cfg.Duration <= 0 || cfg.Duration > maxDuration {
		return MCPResult{}, fmt.Errorf("mcp: want --url, --sessions in [1, %d], --duration in (0, %v]", maxConns, maxDuration)
	}
	sessions := make([]*mcp.ClientSession, 0, cfg.Sessions)
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	// A session that fails to open is an error of the run (the
	// initialize call failed) and is tried again, at most once per
	// session; none opening fails the run.
	var connectErrs int
	var firstErr error
	for len(sessions) < cfg.Sessions && connectErrs <= cfg.Sessions {
		c := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1.0.0"}, nil)
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		s, err := c.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: cfg.URL, HTTPClient: mcpClient(), MaxRetries: -1}, nil)
		cancel()
		if err != nil {
			connectErrs++
			firstErr = cmp.Or(firstErr, fmt.Errorf("mcp connect %s: %w", cfg.URL, err))
			continue
		}
		sessions = append(sessions, s)
	}
	if len(sessions) == 0 {
		return MCPResult{}, firstErr
	}
	type run struct {
		samples []time.Duration
		errs    int
		err     error
	}
	runs := make([]run, len(sessions))
	start := time.Now()
	stop := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for k, s := range sessions {
		wg.Go(func() {
			r := &runs[k]
			want := "x"
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				out, err := s.CallTool(ctx, &mcp.CallToolParams{Name: MCPTool, Arguments: map[string]any{"arg": want}})
				if err == nil && (out.IsError || len(out.Content) != 1 || !isText(out.Content[0], want)) {
					err = fmt.Errorf("unexpected result %+v", out)
				}
				if err != nil {
					r.errs++
					if r.err == nil {
						r.err = err
					}
					continue
				}
				r.samples = append(r.samples, time.Since(t0))
			}
		})
	}
	wg.Wait()
	res := MCPResult{Sessions: len(sessions), Seconds: time.Since(start).Seconds(), Errors: connectErrs}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	var samples []time.Duration
	for _, r := range runs {
		samples = append(samples, r.samples...)
		res.Errors += r.errs
		if res.FirstError == "" && r.err != nil {
			res.FirstError = r.err.Error()
		}
	}
	res.Calls = len(samples)
	res.PerSecond = math.Round(float64(res.Calls)/res.Seconds*10) / 10
	res.P50us, res.P90us, res.P99us, res.Maxus = percentiles(samples)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("mcp: %w", err)
	}
	return res, nil
}

func isText(c mcp.Content, want string) bool {
	t, ok := c.(*mcp.TextContent)
	return ok && t.Text == want
}

// percentiles sorts samples and returns p50, p90, p99 and the maximum in
// microseconds (nearest rank).
func percentiles(samples []time.Duration) (p50, p90, p99, maxUS float64) {
	slices.Sort(samples)
	at := func(p float64) float64 {
		return math.Round(float64(benchkube.Percentile(samples, p))/float64(time.Microsecond)*10) / 10
	}
	return at(50), at(90), at(99), at(100)
}

// Client runs one load generator and prints one JSON object:
//
//	http --url URL [--rate R] [--conns C] [--size S] [--duration D] [--grace G]
//	mcp  --url URL [--sessions K] [--duration D]
func Client(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: want a mode: http or mcp", ClientCommand)
	}
	fs := flag.NewFlagSet(ClientCommand+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var out any
	var err error
	switch args[0] {
	case "http":
		var cfg HTTPConfig
		fs.StringVar(&cfg.URL, "url", "", "URL to POST to (the server echoes the body)")
		fs.Float64Var(&cfg.Rate, "rate", 500, "requests per second, all connections together")
		fs.IntVar(&cfg.Conns, "conns", 8, "keep-alive connections")
		fs.IntVar(&cfg.Size, "size", 1024, "body bytes each way")
		fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to send")
		fs.DurationVar(&cfg.Grace, "grace", 2*time.Second, "how long to wait for late responses")
		if err = fs.Parse(args[1:]); err == nil {
			out, err = RunHTTP(ctx, cfg)
		}
	case "mcp":
		var cfg MCPConfig
		fs.StringVar(&cfg.URL, "url", "", "MCP endpoint URL")
		fs.IntVar(&cfg.Sessions, "sessions", 4, "sessions calling at once")
		fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to call")
		if err = fs.Parse(args[1:]); err == nil {
			out, err = RunMCP(ctx, cfg)
		}
	default:
		return fmt.Errorf("%s: unknown mode %q", ClientCommand, args[0])
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", ClientCommand, args[0], err)
	}
	return json.NewEncoder(stdout).Encode(out)
}
