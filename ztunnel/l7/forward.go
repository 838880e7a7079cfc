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
// chose it. Responded is called with the status when the endpoint's
// response headers arrived (the time to first byte), Failed when the try failed before
// that, Done once when the try is over either way; GotConn with the
// upstream connection (one Dial returned, new or kept alive) the try goes
// over. Each may be nil. Data is the caller's.
type Attempt struct {
	Addr         netip.AddrPort
	Data         any
	Responded    func(status int)
	Failed, Done func()
	GotConn      func(net.Conn)
	// Retry says when a try that got a response is made again; the zero
	// value: only when the destination tunnel did not reach the app
	// (NotDelivered).
	Retry Retry
	// Timeout bounds the try, from its start to the response's end
	// (Gateway API's backendRequest timeout): 504 when no response came
	// in time, the response cut after. 0: none.
	Timeout time.Duration
}

// Timeouts: the cause of a request's context that ran out of its time
// (the caller sets them with context.WithTimeoutCause or a
// context.CancelCauseFunc), or of a try's (ErrBackendTimeout,
// Attempt.Timeout). The app gets 504 with the reason in the
// Agentmesh-Error header.
var (
	// ErrRequestTimeout: the whole request (a route's timeouts.request,
	// a TrafficPolicy's total).
	ErrRequestTimeout = &timeoutError{"request timeout", "request_timeout"}
	// ErrBackendTimeout: one try (a route's timeouts.backendRequest).
	ErrBackendTimeout = &timeoutError{"backend request timeout", "backend_timeout"}
	// ErrFirstByteTimeout: no response headers in time.
	ErrFirstByteTimeout = &timeoutError{"no response headers in time", "first_byte_timeout"}
	// ErrIdleTimeout: the response moved no byte for too long.
	ErrIdleTimeout = &timeoutError{"response idle too long", "idle_timeout"}
)

type timeoutError struct{ msg, reason string }

func (e *timeoutError) Error() string { return e.msg }

// timeoutOf is the timeout that ended a request (err its try's error,
// cause its context's), if one did.
func timeoutOf(err, cause error) (*timeoutError, bool) {
	var te *timeoutError
	if errors.As(cause, &te) || errors.As(err, &te) {
		return te, true
	}
	return nil, false
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
	st     *state
	cancel context.CancelFunc // ends the try's time bound
}

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.st.bodyErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (b bodyReader) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
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
	cause := context.Cause(r.Context())
	switch te, timedOut := timeoutOf(err, cause); {
	case timedOut:
		status, reason = http.StatusGatewayTimeout, te.reason
	case cause != nil:
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
	var body *replayBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &replayBody{rc: out.Body, n: &st.reqBytes}
	}
	retries := 0
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
		if body != nil {
			body.keep(len(a.Retry.Codes) > 0)
		}
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
		wrote := make(chan struct{})
		var wroteOnce sync.Once
		ct := &httptrace.ClientTrace{
			// The try's writing of the request (its body) is over: a
			// retry may read the body again.
			WroteRequest: func(httptrace.WroteRequestInfo) { wroteOnce.Do(func() { close(wrote) }) },
		}
		if a.GotConn != nil {
			got := a.GotConn
			ct.GotConn = func(info httptrace.GotConnInfo) { got(info.Conn) }
		}
		try = *try.WithContext(httptrace.WithClientTrace(try.Context(), ct))
		cancel := context.CancelFunc(func() {})
		if a.Timeout > 0 {
			var ctx context.Context
			ctx, cancel = context.WithTimeoutCause(try.Context(), a.Timeout, ErrBackendTimeout)
			try = *try.WithContext(ctx)
		}
		resp, err := h.tr.RoundTrip(&try)
		if err == nil {
			if retry, rerr := h.retryResponse(out, a, resp, body, wrote, st, &retries); retry || rerr != nil {
				cancel()
				if rerr != nil {
					return nil, rerr
				}
				continue
			}
			st.status = resp.StatusCode
			if resp.StatusCode != http.StatusSwitchingProtocols { // an upgrade's body is the connection
				resp.Body = bodyReader{ReadCloser: resp.Body, st: st, cancel: cancel}
			} else {
				cancel() // an upgraded connection is not bounded by the try's time
			}
			if a.Responded != nil {
				a.Responded(resp.StatusCode)
			}
			return resp, nil
		}
		if cerr := context.Cause(try.Context()); errors.Is(cerr, ErrBackendTimeout) {
			err = fmt.Errorf("%w: %w", ErrBackendTimeout, err)
		}
		cancel()
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

// retryResponse decides whether resp, the response of try a of out, is
// tried again: the destination tunnel did not reach the app (within
// Forwarder.Attempts), or a's retry policy names its status (within its
// attempts, and its budget). The body, if any, must be whole again for
// it: the try's write has ended (wrote) and all it read was kept. On
// true, resp is discarded, the try counted as failed, and the backoff
// waited; an error when the request's context ended meanwhile (resp
// discarded too). retries counts the tries made again for a status.
func (h *handler) retryResponse(out *http.Request, a Attempt, resp *http.Response, body *replayBody, wrote <-chan struct{}, st *state, retries *int) (bool, error) {
	ctx := out.Context()
	notDelivered := NotDelivered(resp) && st.attempts < h.fw.Attempts
	byCode := !notDelivered && a.Retry.codeRetries(resp.StatusCode) && *retries < a.Retry.Attempts
	if !notDelivered && !byCode || resp.StatusCode == http.StatusSwitchingProtocols || ctx.Err() != nil {
		return false, nil
	}
	if body != nil {
		// The try may still be sending the body (an app that answers
		// before it read it all): wait a little for the write to end.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-wrote:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		select {
		case <-wrote:
		default:
			return false, nil
		}
		if !body.rewind() {
			return false, nil
		}
	}
	if byCode && a.Retry.Allow != nil && !a.Retry.Allow() {
		return false, nil
	}
	discard(resp.Body)
	if a.Failed != nil {
		a.Failed()
	}
	st.err = fmt.Errorf("try %d: %s", st.attempts, resp.Status)
	if byCode {
		*retries++
		if !a.Retry.backoff(ctx, *retries) {
			return false, fmt.Errorf("%w (while waiting to retry)", context.Cause(ctx))
		}
	}
	return true, nil
}
