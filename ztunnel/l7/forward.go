package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Attempt is one try of a request on one endpoint, as the caller's Pick
// chose it. Responded is called when the endpoint's response headers
// arrived (the time to first byte), Failed when the try failed before
// that, Done once when the try is over either way; GotConn with the
// upstream connection (one Dial returned, new or kept alive) the try goes
// over. Each may be nil. Data is the caller's.
type Attempt struct {
	Addr                    netip.AddrPort
	Data                    any
	Responded, Failed, Done func()
	GotConn                 func(net.Conn)
}

// Result is how one request went, for the caller's records.
type Result struct {
	// Status is the response status the app got (a proxy error's too).
	Status int
	// Attempt is the last try (zero when none was made), Attempts their
	// number.
	Attempt  Attempt
	Attempts int
	// Err is why the proxy answered itself (nil when the endpoint did).
	Err error
	// ReqBytes and RespBytes are the body bytes each way.
	ReqBytes, RespBytes int64
	Duration            time.Duration
}

// Forwarder forwards the requests of one app connection.
type Forwarder struct {
	Log *slog.Logger
	// HTTP2 makes the upstream leg HTTP/2 cleartext (prior knowledge), as
	// gRPC and h2c servers need; else HTTP/1.1.
	HTTP2 bool
	// Attempts bounds the tries of one request: a try whose connection
	// failed before the request was sent is made again on another
	// endpoint; nothing is tried again once a byte of the request went
	// out.
	Attempts int
	// Pick chooses the endpoint of a request's next try, skipping the
	// addresses in tried when it can.
	Pick func(r *http.Request, tried map[netip.AddrPort]bool, attempts int) (Attempt, error)
	// Dial opens a connection to the endpoint of a (an HBONE stream).
	Dial func(ctx context.Context, a Attempt) (net.Conn, error)
	// ErrorStatus maps an error of a try to the status the app gets and
	// a short reason for the Agentmesh-Error header (nil: 502).
	ErrorStatus func(err error) (int, string)
	// Done is called once per request when its response ended.
	Done func(r *http.Request, res Result)
}

// DialError is a failure to connect to an endpoint: nothing of the
// request was sent.
type DialError struct {
	Addr netip.AddrPort
	Err  error
}

func (e *DialError) Error() string { return fmt.Sprintf("connect to %s: %v", e.Addr, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }

// Handler returns the http.Handler of one app connection and a func that
// closes its idle upstream connections (call it when the app connection
// ended).
func (fw *Forwarder) Handler() (http.Handler, func()) {
	h := &handler{fw: fw, attempts: map[netip.AddrPort]Attempt{}}
	tr := &http.Transport{
		DialContext:         h.dial,
		DisableCompression:  true, // the app's Accept-Encoding goes through as it is
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	var protos http.Protocols
	if fw.HTTP2 {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr.Protocols = &protos
	h.tr = tr
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host // replaced per try by the endpoint's address
			// The proxy drops these before Rewrite; a mesh passes the
			// app's own on as they are and adds none.
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
		},
		Transport:    (*tryer)(h),
		ErrorHandler: h.proxyError,
		ErrorLog:     slog.NewLogLogger(fw.Log.Handler(), slog.LevelDebug),
	}
	return h, tr.CloseIdleConnections
}

type handler struct {
	fw    *Forwarder
	tr    *http.Transport
	proxy *httputil.ReverseProxy

	mu       sync.Mutex
	attempts map[netip.AddrPort]Attempt // the latest try per address, for dial
}

type stateKey struct{}

// state is one request's, shared by its tries and its records.
type state struct {
	attempt  Attempt
	attempts int
	err      error
	status   int // the upstream's, for an upgrade
	reqBytes atomic.Int64
	bodyErr  atomic.Pointer[error] // the first error reading the upstream's response body
}

// bodyReader notes the first error reading the upstream's response body
// (the proxy then aborts the app's response; the record says why).
type bodyReader struct {
	io.ReadCloser
	st *state
}

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.st.bodyErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

// errAborted is the record's error of a response the proxy cut short
// (the upstream's body failed, or the app stopped reading).
var errAborted = errors.New("response aborted")

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &state{}
	rw := &StatusWriter{ResponseWriter: w}
	defer func() {
		// The proxy aborts a response it cannot finish by panicking with
		// http.ErrAbortHandler (the server then drops the connection):
		// the request is still recorded, with why, and the panic goes on.
		v := recover()
		if v != nil && v != http.ErrAbortHandler {
			panic(v)
		}
		if v != nil {
			st.err = errAborted
			if e := st.bodyErr.Load(); e != nil {
				st.err = fmt.Errorf("%w: upstream body: %w", errAborted, *e)
			}
		}
		h.done(r, st, rw, start)
		if v != nil {
			panic(v)
		}
	}()
	h.proxy.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
}

// done ends the request's try and reports its Result.
func (h *handler) done(r *http.Request, st *state, rw *StatusWriter, start time.Time) {
	if st.attempt.Done != nil {
		st.attempt.Done()
	}
	if h.fw.Done == nil {
		return
	}
	status := rw.Status
	if st.status == http.StatusSwitchingProtocols {
		status = st.status
	}
	if status == 0 {
		status = http.StatusOK
	}
	h.fw.Done(r, Result{
		Status: status, Attempt: st.attempt, Attempts: st.attempts, Err: st.err,
		ReqBytes: st.reqBytes.Load(), RespBytes: rw.N, Duration: time.Since(start),
	})
}

func (h *handler) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", addr, err)
	}
	h.mu.Lock()
	a, ok := h.attempts[ap]
	h.mu.Unlock()
	if !ok {
		return nil, &DialError{Addr: ap, Err: errors.New("no endpoint chosen for this address")}
	}
	c, err := h.fw.Dial(ctx, a)
	if err != nil {
		return nil, &DialError{Addr: ap, Err: err}
	}
	return c, nil
}

// proxyError answers a request that got no response from any endpoint.
func (h *handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(stateKey{}).(*state)
	if st != nil {
		st.err = err
	}
	status, reason := http.StatusBadGateway, "upstream_failed"
	if h.fw.ErrorStatus != nil {
		status, reason = h.fw.ErrorStatus(err)
	}
	if r.Context().Err() != nil {
		// The app went away: nobody reads this answer.
		status, reason = 499, "client_closed"
	}
	h.fw.Log.Debug("request not forwarded", "method", r.Method, "host", r.Host, "status", status, "err", err)
	w.Header().Set("Agentmesh-Error", reason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if status == 499 {
		return
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "agentmesh: %s\n", http.StatusText(status))
}

// tryer is the proxy's RoundTripper: the tries of one request.
type tryer handler

func (t *tryer) RoundTrip(out *http.Request) (*http.Response, error) {
	h := (*handler)(t)
	st, _ := out.Context().Value(stateKey{}).(*state)
	if st == nil {
		st = &state{}
	}
	var body *countingBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &countingBody{rc: out.Body, n: &st.reqBytes}
	}
	tried := map[netip.AddrPort]bool{}
	for {
		a, err := h.fw.Pick(out, tried, st.attempts)
		if err != nil {
			if st.attempts > 0 && st.err != nil {
				return nil, fmt.Errorf("%w; then: %w", st.err, err)
			}
			return nil, err
		}
		if st.attempt.Done != nil {
			st.attempt.Done()
		}
		st.attempt = a
		st.attempts++
		tried[a.Addr] = true
		h.mu.Lock()
		h.attempts[a.Addr] = a
		h.mu.Unlock()

		try := *out
		u := *out.URL
		u.Host = a.Addr.String()
		try.URL = &u
		if body != nil {
			try.Body = body
		}
		if a.GotConn != nil {
			got := a.GotConn
			try = *try.WithContext(httptrace.WithClientTrace(try.Context(), &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) { got(info.Conn) },
			}))
		}
		resp, err := h.tr.RoundTrip(&try)
		if err == nil {
			st.status = resp.StatusCode
			if resp.StatusCode != http.StatusSwitchingProtocols { // an upgrade's body is the connection
				resp.Body = bodyReader{ReadCloser: resp.Body, st: st}
			}
			if a.Responded != nil {
				a.Responded()
			}
			return resp, nil
		}
		if a.Failed != nil {
			a.Failed()
		}
		st.err = err
		var de *DialError
		if !errors.As(err, &de) || (body != nil && body.touched.Load()) || st.attempts >= h.fw.Attempts || out.Context().Err() != nil {
			return nil, err
		}
		// Nothing was sent: try another endpoint.
	}
}

// countingBody is a request body shared by the tries of one request: it
// counts what was read and says whether anything was, and a try's Close
// (the transport closes the body of a failed try) does not end it for the
// next try; the server closes the real one.
type countingBody struct {
	rc      io.ReadCloser
	n       *atomic.Int64
	touched atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// StatusWriter notes the status and body bytes of a response (Status 0
// until one is written, N the body bytes). Unwrap lets
// http.ResponseController (the proxy's flushes, an upgrade's hijack) reach
// the server's writer.
type StatusWriter struct {
	http.ResponseWriter
	Status int
	N      int64
}

func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 && code >= 200 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.N += int64(n)
	return n, err
}

// Unwrap is the writer underneath.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
