package meshlab

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// FloodResult is what `app flood` prints last.
type FloodResult struct {
	To      string       `json:"to"`
	Seconds float64      `json:"seconds"`
	Classes []FloodClass `json:"classes"`
}

// FloodClass is how the connections of one kind fared.
type FloodClass struct {
	// Kind is halfopen-<mode> (none, partial, hello) or garbage-<kind>
	// (random, http1, h2).
	Kind      string `json:"kind"`
	Conns     int    `json:"conns"`
	Connected int    `json:"connected"`
	// DialErrors groups the failed dials by error.
	DialErrors []BurstError `json:"dial_errors,omitempty"`
	// PeerClosed counts connections the peer ended (EOF or reset) while
	// the flood still held them; Ended says how, by error.
	PeerClosed int            `json:"peer_closed"`
	Ended      map[string]int `json:"ended,omitempty"`
	// Held counts connections still open when the flood closed them
	// itself (hold or garbage wait over, or stopped).
	Held int `json:"held"`
	// EndMinMS, EndP50MS and EndMaxMS are the time from the start of the
	// dial to the peer's close, over PeerClosed: never less than the time
	// the peer held the connection, whatever the scheduling delays here.
	EndMinMS float64 `json:"end_min_ms,omitempty"`
	EndP50MS float64 `json:"end_p50_ms,omitempty"`
	EndMaxMS float64 `json:"end_max_ms,omitempty"`
	// BytesBack is what the peer sent on these connections, in all.
	BytesBack int64 `json:"bytes_back"`
}

// FloodProgress is the line `app flood --progress` prints once every
// dial has ended: the flood is at its peak.
type FloodProgress struct {
	To        string `json:"to"`
	Dialed    int    `json:"dialed"`
	Connected int    `json:"connected"`
}

// Half-open modes and garbage kinds of `app flood`.
var (
	halfOpenModes = []string{"none", "partial", "hello"}
	garbageKinds  = []string{"random", "http1", "h2"}
)

// appFlood is `app flood --to ADDR --halfopen N --garbage M --hold D`: an
// attacker. It opens N half-open TLS handshakes and M garbage connections
// at once. A half-open connection sends nothing, half of a TLS 1.3
// ClientHello, or a whole one (and never answers the server's reply), by
// turns, and is held until --hold after the first dial unless the peer
// closes it first. A garbage connection sends 4 KiB of random bytes, an
// HTTP/1.1 request or a truncated HTTP/2 preface, by turns, and reads
// what comes back for --garbage-wait. It prints a FloodResult per kind
// and exits when every connection has ended; it exits non-zero only on
// bad usage.
func appFlood(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app flood", flag.ContinueOnError)
	to := fs.String("to", "", "address to attack (host:port)")
	halfOpen := fs.Int("halfopen", 0, "half-open TLS handshakes")
	garbage := fs.Int("garbage", 0, "garbage connections")
	hold := fs.Duration("hold", 30*time.Second, "hold half-open connections until this long after the first dial")
	wait := fs.Duration("garbage-wait", 2*time.Second, "how long a garbage connection reads the answer before it closes")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of one dial")
	progress := fs.Bool("progress", false, "print a line once every dial has ended")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *to == "" || *halfOpen < 0 || *garbage < 0 || *halfOpen+*garbage == 0 || *hold <= 0 || *wait <= 0 || *timeout <= 0 {
		return fmt.Errorf("%w: --to, some --halfopen or --garbage connections and positive durations are required", ErrUsage)
	}
	hello, err := clientHello()
	if err != nil {
		return err
	}
	f := &flood{to: *to, hello: hello, hold: *hold, wait: *wait, timeout: *timeout}
	if *progress {
		f.progress = func(p FloodProgress) { _ = writeJSON(stdout, p) }
	}
	return writeJSON(stdout, f.run(ctx, *halfOpen, *garbage))
}

// flood is one run of `app flood`.
type flood struct {
	to       string
	hello    []byte // a TLS 1.3 ClientHello record
	hold     time.Duration
	wait     time.Duration
	timeout  time.Duration
	progress func(FloodProgress) // nil: no progress line

	total int // connections

	mu        sync.Mutex // guards the fields below
	pending   int        // dials not yet ended
	connected int
}

// floodConn is the outcome of one connection.
type floodConn struct {
	kind     string
	dialErr  error
	ended    error         // how the peer ended it; nil when the flood closed it
	lasted   time.Duration // dial to the peer's close
	received int64
}

// run opens every connection at once and waits until all have ended.
func (f *flood) run(ctx context.Context, halfOpen, garbage int) FloodResult {
	start := time.Now()
	release := start.Add(f.hold)
	f.total, f.pending = halfOpen+garbage, halfOpen+garbage
	out := make([]floodConn, halfOpen+garbage)
	var wg sync.WaitGroup
	for i := range halfOpen {
		mode := halfOpenModes[i%len(halfOpenModes)]
		wg.Go(func() { out[i] = f.one(ctx, "halfopen-"+mode, f.halfOpenBytes(mode), release) })
	}
	for i := range garbage {
		kind := garbageKinds[i%len(garbageKinds)]
		wg.Go(func() { out[halfOpen+i] = f.one(ctx, "garbage-"+kind, garbageBytes(kind), time.Time{}) })
	}
	wg.Wait()
	return FloodResult{To: f.to, Seconds: time.Since(start).Seconds(), Classes: floodClasses(out)}
}

// one dials, sends payload and reads until the peer ends the connection
// or until (a zero until: f.wait after the send). ctx ending closes it.
func (f *flood) one(ctx context.Context, kind string, payload []byte, until time.Time) floodConn {
	res := floodConn{kind: kind}
	begin := time.Now()
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", f.to)
	cancel()
	f.dialEnded(err == nil)
	if err != nil {
		res.dialErr = err
		return res
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	if len(payload) > 0 {
		// A write the peer refuses shows in the read below.
		_, _ = c.Write(payload)
	}
	if until.IsZero() {
		until = time.Now().Add(f.wait)
	}
	_ = c.SetReadDeadline(until)
	res.received, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return res // held until we closed it
	}
	res.lasted = time.Since(begin)
	res.ended = err
	if err == nil {
		res.ended = io.EOF
	}
	return res
}

// dialEnded counts a finished dial and reports progress after the last.
func (f *flood) dialEnded(ok bool) {
	f.mu.Lock()
	f.pending--
	if ok {
		f.connected++
	}
	last, connected := f.pending == 0, f.connected
	f.mu.Unlock()
	if last && f.progress != nil {
		f.progress(FloodProgress{To: f.to, Dialed: f.total, Connected: connected})
	}
}

// halfOpenBytes is what a half-open connection of mode sends.
func (f *flood) halfOpenBytes(mode string) []byte {
	switch mode {
	case "partial":
		return f.hello[:len(f.hello)/2]
	case "hello":
		return f.hello
	}
	return nil
}

// garbageBytes is what a garbage connection of kind sends.
func garbageBytes(kind string) []byte {
	switch kind {
	case "http1":
		return []byte("GET / HTTP/1.1\r\nHost: agentmesh\r\nUser-Agent: flood\r\n\r\n")
	case "h2":
		return []byte("PRI * HTTP/2.0\r\n\r\nSM") // the preface, cut short
	}
	b := make([]byte, 4096)
	rand.Read(b)
	return b
}

// floodClasses summarises the connections by kind, in the order of the
// kinds' first connections.
func floodClasses(out []floodConn) []FloodClass {
	var classes []FloodClass
	ends := map[string][]time.Duration{}
	index := map[string]int{}
	dialErrs := map[string]map[string]int{}
	for _, c := range out {
		i, ok := index[c.kind]
		if !ok {
			i = len(classes)
			index[c.kind] = i
			classes = append(classes, FloodClass{Kind: c.kind})
			dialErrs[c.kind] = map[string]int{}
		}
		cl := &classes[i]
		cl.Conns++
		cl.BytesBack += c.received
		switch {
		case c.dialErr != nil:
			dialErrs[c.kind][errClass(c.dialErr)]++
		case c.ended != nil:
			cl.Connected++
			cl.PeerClosed++
			if cl.Ended == nil {
				cl.Ended = map[string]int{}
			}
			cl.Ended[errClass(c.ended)]++
			ends[c.kind] = append(ends[c.kind], c.lasted)
		default:
			cl.Connected++
			cl.Held++
		}
	}
	for i := range classes {
		cl := &classes[i]
		cl.DialErrors = groupErrors(dialErrs[cl.Kind])
		if e := ends[cl.Kind]; len(e) > 0 {
			slices.Sort(e)
			cl.EndMinMS, cl.EndP50MS, cl.EndMaxMS = ms(e[0]), ms(pct(e, 50)), ms(e[len(e)-1])
		}
	}
	return classes
}

// groupErrors turns counts by error into BurstErrors, most common first.
func groupErrors(counts map[string]int) []BurstError {
	var out []BurstError
	for e, n := range counts {
		out = append(out, BurstError{Error: e, Count: n})
	}
	slices.SortFunc(out, func(a, b BurstError) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Error, b.Error)
	})
	return out
}
