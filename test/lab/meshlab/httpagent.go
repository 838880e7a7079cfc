package meshlab

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// AgentReply is what `app http` answers on GET /.
type AgentReply struct {
	Agent  string `json:"agent"`
	Local  string `json:"local"`  // the address the request arrived on
	Remote string `json:"remote"` // the peer as this agent saw it
}

// CallResult is what `app http` answers on GET /call?to=URL[&net=tcp4|tcp6].
type CallResult struct {
	From      string          `json:"from"`
	To        string          `json:"to"`
	Status    int             `json:"status,omitempty"`
	Bytes     int             `json:"bytes"`
	LatencyMS float64         `json:"latency_ms"`
	Reply     json.RawMessage `json:"reply,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// appHTTP is `app http --name NAME --listen :8080[,:9090...]
// [--grpc-health :8081] [fault flags]`: a small HTTP agent on every
// listed address, optionally with the gRPC health service (answering
// SERVING) beside it, and the faults it is told to inject (Fault).
func appHTTP(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app http", flag.ContinueOnError)
	name := fs.String("name", "agent", "agent name to report")
	listen := fs.String("listen", ":8080", "addresses to listen on, comma separated")
	grpcHealth := fs.String("grpc-health", "", "also serve the gRPC health service on this address")
	var f Fault
	fs.DurationVar(&f.Delay, "delay", 0, "fault: wait this long before answering each request")
	fs.Float64Var(&f.FailRate, "fail-rate", 0, "fault: answer this share of requests (0..1) with --fail-status, before reading the body")
	fs.IntVar(&f.FailStatus, "fail-status", http.StatusServiceUnavailable, "fault: the status of a failed request")
	fs.Float64Var(&f.ResetRate, "reset-rate", 0, "fault: reset the connection of this share of requests")
	fs.Float64Var(&f.HangRate, "hang-rate", 0, "fault: never answer this share of requests")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	handler, err := newFaulty(agentHandler(*name), f)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	lns, err := listenAll(*listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, localAddrKey{}, c.LocalAddr().String())
		}}
	errs := make(chan error, len(lns)+1)
	for _, ln := range lns {
		fmt.Fprintf(stdout, "agent %s listening on %s\n", *name, ln.Addr())
		go func() { errs <- serveHTTP(srv, ln) }()
	}
	stopHealth, err := startGRPCHealth(*name, *grpcHealth, stdout, errs)
	if err != nil {
		srv.Close()
		return errors.Join(err, collect(errs, len(lns)))
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		stopHealth()
	})
	defer stop()
	n := len(lns)
	if *grpcHealth != "" {
		n++
	}
	return collect(errs, n)
}

// serveHTTP serves srv on ln until srv shuts down.
func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// collect waits for n results from errs and joins the errors.
func collect(errs <-chan error, n int) error {
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	return err
}

type localAddrKey struct{}

// agentHandler serves / (who am I, who called) and /call?to=URL.
func agentHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
			return
		}
		io.Copy(io.Discard, r.Body) //nolint:errcheck // a POST's body is read and dropped
		local, _ := r.Context().Value(localAddrKey{}).(string)
		respondJSON(w, http.StatusOK, AgentReply{Agent: name, Local: local, Remote: r.RemoteAddr})
	})
	mux.HandleFunc("GET /call", func(w http.ResponseWriter, r *http.Request) {
		to := r.URL.Query().Get("to")
		if u, err := url.Parse(to); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			respondJSON(w, http.StatusBadRequest, CallResult{From: name, To: to, Error: "to must be an http URL"})
			return
		}
		network := r.URL.Query().Get("net")
		if network != "" && network != "tcp4" && network != "tcp6" {
			respondJSON(w, http.StatusBadRequest, CallResult{From: name, To: to, Error: "net must be tcp4 or tcp6"})
			return
		}
		// The app's own trace context goes on, as an instrumented agent's
		// would: the call is a child of the request that asked for it.
		res := call(r.Context(), name, to, network, r.Header.Get("Traceparent"))
		code := http.StatusOK
		if res.Error != "" {
			code = http.StatusBadGateway
		}
		respondJSON(w, code, res)
	})
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		// n events, one every `every`, each carrying the time it was sent.
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		every, derr := time.ParseDuration(r.URL.Query().Get("every"))
		if err != nil || derr != nil || n < 1 || n > 10000 || every < 0 {
			http.Error(w, "want n=1..10000 and every=DURATION", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		t := time.NewTicker(max(every, time.Millisecond))
		defer t.Stop()
		for i := range n {
			if i > 0 {
				select {
				case <-t.C:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "id: %d\ndata: %d\n\n", i, time.Now().UnixNano())
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /calls", func(w http.ResponseWriter, r *http.Request) {
		// to may repeat: each call then goes to one of them at random
		// (as kube-proxy picks a backend per connection, without a mesh).
		to := r.URL.Query()["to"]
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if len(to) == 0 || err != nil || n < 1 || n > 10000 {
			respondJSON(w, http.StatusBadRequest, CallsResult{Error: "want to=http URL (repeatable) and n=1..10000"})
			return
		}
		for _, t := range to {
			if u, perr := url.Parse(t); perr != nil || u.Scheme != "http" {
				respondJSON(w, http.StatusBadRequest, CallsResult{Error: "want to=http URL (repeatable) and n=1..10000"})
				return
			}
		}
		// header=Name:value (repeatable) goes on every call.
		h := http.Header{}
		for _, kv := range r.URL.Query()["header"] {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || k == "" {
				respondJSON(w, http.StatusBadRequest, CallsResult{Error: "want header=Name:value"})
				return
			}
			h.Add(k, v)
		}
		method := cmp.Or(r.URL.Query().Get("method"), http.MethodGet)
		if method != http.MethodGet && method != http.MethodPost {
			respondJSON(w, http.StatusBadRequest, CallsResult{Error: "want method=GET or POST"})
			return
		}
		respondJSON(w, http.StatusOK, calls(r.Context(), method, to, n, h))
	})
	return mux
}

// CallsResult is what `app http` answers on GET /calls?to=URL&n=N: N GETs
// over one keep-alive connection (one per URL when to repeats: each call
// to one of them at random).
type CallsResult struct {
	// Connections is how many connections the N calls took (1 unless one
	// broke).
	Connections int `json:"connections"`
	// By counts the answers by the agent that gave them.
	By     map[string]int `json:"by"`
	Status map[int]int    `json:"status"`
	// MinMS and MaxMS are the fastest and slowest call as this client
	// measured them (request sent to response read).
	MinMS float64 `json:"min_ms"`
	MaxMS float64 `json:"max_ms"`
	// P50MS and P99MS are the calls' latency percentiles (nearest rank).
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	// MeanMS is their mean.
	MeanMS float64 `json:"mean_ms"`
	Error  string  `json:"error,omitempty"`
}

// calls sends n requests (GET, or POST with a small JSON body) to one of
// tos at random each (one keep-alive connection per URL's host), as a
// client with a connection pool does, each with header h.
func calls(ctx context.Context, method string, tos []string, n int, h http.Header) (res CallsResult) {
	res = CallsResult{By: map[string]int{}, Status: map[int]int{}}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var d net.Dialer
	var dials atomic.Int64
	tr := &http.Transport{MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	var lat []float64
	defer func() {
		res.Connections = int(dials.Load())
		if len(lat) > 0 {
			slices.Sort(lat)
			rank := func(p float64) float64 { return lat[max(0, int(math.Ceil(p*float64(len(lat))))-1)] }
			res.P50MS, res.P99MS = rank(0.50), rank(0.99)
			var sum float64
			for _, v := range lat {
				sum += v
			}
			res.MeanMS = sum / float64(len(lat))
		}
	}()
	client := &http.Client{Transport: tr}
	for range n {
		var reqBody io.Reader
		if method == http.MethodPost {
			reqBody = strings.NewReader(`{"task":"validate"}`)
		}
		req, err := http.NewRequestWithContext(ctx, method, tos[rand.IntN(len(tos))], reqBody)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		maps.Copy(req.Header, h)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		ms := float64(time.Since(start).Microseconds()) / 1000
		if res.MinMS == 0 || ms < res.MinMS {
			res.MinMS = ms
		}
		res.MaxMS = max(res.MaxMS, ms)
		lat = append(lat, ms)
		res.Status[resp.StatusCode]++
		var a AgentReply
		if err == nil && json.Unmarshal(body, &a) == nil && a.Agent != "" {
			res.By[a.Agent]++
		}
	}
	return res
}

// call GETs to on a fresh connection (so each call is one connection in
// the mesh's access logs) and reports what happened. network (tcp4 or
// tcp6) picks the family a name resolves to; "" lets the resolver choose.
func call(ctx context.Context, from, to, network, traceparent string) CallResult {
	res := CallResult{From: from, To: to}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true}
	if network != "" {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return d.DialContext(ctx, network, addr) }
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, to, nil)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	res.Status, res.Bytes = resp.StatusCode, len(body)
	switch {
	case err != nil:
		res.Error = err.Error()
	case resp.Header.Get("Agentmesh-Error") != "":
		// The caller's tunnel answered, not the peer (a refusal by
		// policy, no endpoint, ...): as a failed connection would be.
		res.Error = fmt.Sprintf("the mesh answered %d (%s): %s", resp.StatusCode, resp.Header.Get("Agentmesh-Error"), bytes.TrimSpace(body))
	case json.Valid(body):
		res.Reply = body
	}
	return res
}

// respondJSON writes v as the JSON body.
func respondJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
