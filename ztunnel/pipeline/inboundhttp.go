package pipeline

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/api/policy"
	"github.com/agentmesh/agentmesh/ztunnel/authorize"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/flow"
	"github.com/agentmesh/agentmesh/ztunnel/jsonrpc"
	"github.com/agentmesh/agentmesh/ztunnel/l7"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// inboundSniffTimeout bounds the wait for the first bytes of a stream
// whose requests the policy decides: a client that sends nothing in that
// time (a server-first protocol) is decided as opaque bytes.
var inboundSniffTimeout = time.Second

// SetInboundSniffTimeout sets that wait and returns the old one (tests).
func SetInboundSniffTimeout(d time.Duration) time.Duration {
	old := inboundSniffTimeout
	inboundSniffTimeout = d
	return old
}

// maxBodyScan bounds the body prefix read to find a JSON-RPC call's
// method and tool: a call whose method or params.name lies past it is
// refused (413), as it cannot be decided.
const maxBodyScan = 64 << 10

// inboundRequests carries stream s, admitted with L7 rules in force
// (ac.L7) or hinted by its source tunnel as HTTP it proxies per request,
// to the app at up: HTTP/1.x and HTTP/2 are served request by
// request, each decided by the policy before it is forwarded (a denial
// answers 403, a JSON-RPC one with a JSON-RPC error, and the connection
// goes on); anything else is decided as a whole (authorize.Opaque) and
// copied. It returns the bytes each way and why the stream ended.
func (pl *Pipeline) inboundRequests(ctx context.Context, p *flow.Pod, f *flow.Flow, ac *authorize.Conn, s net.Conn, up net.Conn, hinted bool) (sent, received int64, err error) {
	ch := make(chan sniffResult, 1)
	go sniffStream(s, ch) // ends with its Read: at the latest when the stream ends
	timer := time.NewTimer(inboundSniffTimeout)
	defer timer.Stop()
	timeout := timer.C
	if hinted {
		// The source tunnel writes HTTP on this stream: it may have
		// opened it ahead of a request (an HTTP client's spare
		// connection, idle in its pool), so its first bytes are waited
		// for as long as it is open, not taken for a silent
		// server-first client's.
		timeout = nil
	}
	var res sniffResult
	var timedOut bool
	select {
	case res = <-ch:
	case <-timeout:
		timedOut = true
	case <-ctx.Done():
		up.Close()
		return 0, 0, ctx.Err()
	}
	if !timedOut && (res.app == detect.HTTP1 || res.app == detect.HTTP2) {
		return pl.serveInbound(ctx, p, f, ac, &prefixConn{Conn: s, prefix: res.buf}, up, res.app)
	}
	if d := pl.Authorize.Opaque(ac); !d.Allow {
		up.Close()
		return 0, 0, &authorize.Error{D: d}
	}
	if !timedOut {
		// Opaque bytes the client sent first: what the sniff read goes
		// ahead, then the one relay carries the rest.
		n, err := up.Write(res.buf)
		if err != nil {
			up.Close()
			return int64(n), 0, fmt.Errorf("deliver the first bytes: %w", err)
		}
		sent, received, err := relay.Join(s, up)
		return sent + int64(n), received, err
	}
	// A silent client (a server-first protocol): the server's direction
	// starts now; the client's once the sniff's pending read returned, with
	// what it read.
	var wg sync.WaitGroup
	var down int64
	wg.Go(func() {
		down, _ = io.Copy(s, up)
		if cw, ok := s.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	})
	select {
	case res = <-ch:
	case <-ctx.Done():
		up.Close()
		s.Close()
		wg.Wait()
		return 0, down, ctx.Err()
	}
	n, werr := up.Write(res.buf)
	up1 := int64(n)
	if werr == nil && res.err == nil {
		var m int64
		m, werr = io.Copy(up, s)
		up1 += m
	}
	if cw, ok := up.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		up.Close()
	}
	wg.Wait()
	up.Close()
	if werr == nil && res.err != nil && !errors.Is(res.err, io.EOF) {
		werr = res.err
	}
	return up1, down, werr
}

type sniffResult struct {
	buf []byte
	app detect.App
	err error
}

// sniffStream reads the first bytes of s until detect.Sniff decides
// (at most detect.MaxSniff), the stream ends or fails.
func sniffStream(s io.Reader, ch chan<- sniffResult) {
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for {
		n, err := s.Read(tmp)
		buf = append(buf, tmp[:n]...)
		app, done := detect.Sniff(buf)
		if done || err != nil || len(buf) >= detect.MaxSniff {
			ch <- sniffResult{buf: buf, app: app, err: err}
			return
		}
	}
}

// prefixConn reads prefix before the conn's own bytes.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// serveInbound serves the requests of c (an admitted stream) one by one:
// each is decided, then forwarded to the app over up (the delivered
// connection) or a new delivery when up is taken.
func (pl *Pipeline) serveInbound(ctx context.Context, p *flow.Pod, f *flow.Flow, ac *authorize.Conn, c net.Conn, up net.Conn, app detect.App) (int64, int64, error) {
	cc := &countedConn{Conn: c}
	// A config that no longer admits the stream (no request of it could
	// be allowed) ends it, as it ends an opaque one.
	if !ac.Attach(func() { c.Close() }) {
		up.Close()
		return 0, 0, ac.RevokedErr()
	}
	var mu sync.Mutex
	// The app's first connection goes to the forwarder without its
	// guard: the forwarder may close it (the app said Connection: close,
	// or it idled) while the stream goes on, and the stream's admission
	// (its place among the pod's live connections, its slot) lasts as
	// long as the stream: up's own Close ends it, below.
	first := authorize.Inner(up)
	fw := &l7.Forwarder{
		Log:      pl.Log,
		HTTP2:    app == detect.HTTP2,
		Attempts: 1,
		Pick: func(*http.Request, map[netip.AddrPort]bool, int) (l7.Attempt, error) {
			return l7.Attempt{Addr: f.Dst}, nil
		},
		Dial: func(ctx context.Context, _ l7.Attempt) (net.Conn, error) {
			mu.Lock()
			c := first
			first = nil
			mu.Unlock()
			if c != nil {
				return c, nil
			}
			c, err := pl.Transport.Deliver(ctx, p, netip.AddrPortFrom(f.Src.Addr(), 0), f.Dst)
			if err != nil {
				return nil, err
			}
			if !ac.Attach(func() { c.Close() }) {
				return nil, ac.RevokedErr()
			}
			return c, nil
		},
		ErrorStatus: errorStatus,
		// The forwarder's result of a request (why it answered itself,
		// or cut the response short) goes to the request's record.
		Done: func(r *http.Request, res l7.Result) {
			if p, ok := r.Context().Value(resultKey{}).(*l7.Result); ok {
				*p = res
			}
		},
	}
	forward, closeIdle := fw.Handler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &l7.StatusWriter{ResponseWriter: w}
		var res l7.Result
		r = r.WithContext(context.WithValue(r.Context(), resultKey{}, &res))
		var calls []policy.Call
		var contextID string
		defer func() {
			// A response the forwarder aborted (http.ErrAbortHandler:
			// the app's body broke) is recorded too, then the abort goes on.
			v := recover()
			if v != nil && v != http.ErrAbortHandler {
				panic(v)
			}
			q := record.Request{Method: r.Method, Authority: r.Host, Path: r.URL.Path, Status: sw.Status,
				RespBytes: sw.N, Duration: time.Since(start), Err: res.Err}
			if q.Status == 0 {
				q.Status = http.StatusOK
			}
			if len(calls) > 0 {
				labelCall(&q, calls[0], f.AppProtocol)
			}
			annotateCall(r.Context(), &q, contextID)
			q.TraceID, q.SpanID = traceIDs(r.Context())
			rf := *f
			pl.Record.Request(&rf, q)
			if v != nil {
				panic(v)
			}
		}()
		calls, contextID = pl.authorizeRequest(sw, r, ac, forward)
	})
	l7.ServeConn(ctx, cc, pl.traced(h, trace.SpanKindServer, f), pl.Log)
	closeIdle()
	up.Close() // the stream's admission ends (and the first connection, if unused)
	err := ac.RevokedErr()
	return cc.read.Load(), cc.written.Load(), err
}

// resultKey carries a request's *l7.Result to its record.
type resultKey struct{}

// labelCall names an agent call in its request's record.
func labelCall(q *record.Request, c policy.Call, appProtocol string) {
	switch {
	case strings.HasPrefix(c.Method, "message/") || strings.HasPrefix(c.Method, "tasks/") || strings.HasPrefix(c.Method, "agent/"):
		q.A2AMethod = c.Method
	case appProtocol == string(detect.A2A):
		q.A2AMethod = c.Method
	default:
		q.MCPMethod = c.Method
		q.MCPTool = c.Tool
	}
}

// authorizeRequest decides r: every JSON-RPC call its body carries (a
// batch call by call), or r itself. Allowed, it is forwarded; denied, the
// caller gets 403 (a JSON-RPC error object with the call's id for a
// call) and the denial is logged. It returns the calls found and the A2A
// contextId of the first that has one.
func (pl *Pipeline) authorizeRequest(w http.ResponseWriter, r *http.Request, ac *authorize.Conn, forward http.Handler) ([]policy.Call, string) {
	q := policy.Request{Method: r.Method, Path: cleanPath(r.URL.Path), MCPStream: mcpStream(r)}
	calls, ids, batch, status, msg, contextID := readCalls(r, pl.Authorize.NeedsCalls(ac))
	if status != 0 {
		jsonRPCError(w, status, batch, ids, codeFor(status), msg)
		return calls, contextID
	}
	if len(calls) == 0 {
		if d := pl.Authorize.Request(ac, q); !d.Allow {
			pl.Authorize.RequestDenied(ac, q, d)
			w.Header().Set("Agentmesh-Error", "denied")
			http.Error(w, "agentmesh: forbidden", http.StatusForbidden)
			return nil, contextID
		}
		if pl.rateLimit(w, ac, nil, false, nil) {
			forward.ServeHTTP(w, r)
		}
		return nil, contextID
	}
	for i := range calls {
		q.RPC = &calls[i]
		if d := pl.Authorize.Request(ac, q); !d.Allow {
			pl.Authorize.RequestDenied(ac, q, d)
			w.Header().Set("Agentmesh-Error", "denied")
			jsonRPCError(w, http.StatusForbidden, batch, ids, -32001, "Forbidden")
			return calls, contextID
		}
	}
	if pl.rateLimit(w, ac, calls, batch, ids) {
		forward.ServeHTTP(w, r)
	}
	return calls, contextID
}

// mcpStream reports whether r, which carries no body call, is part of an
// MCP session (streamable HTTP, and the older HTTP+SSE transport): a GET
// asking for the server's event stream, or a DELETE ending a session.
func mcpStream(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet:
		for _, v := range r.Header.Values("Accept") {
			for part := range strings.SplitSeq(v, ",") {
				mt, _, _ := strings.Cut(part, ";")
				if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
					return true
				}
			}
		}
	case http.MethodDelete:
		return r.Header.Get("Mcp-Session-Id") != ""
	}
	return false
}

func codeFor(status int) int {
	if status == http.StatusBadRequest {
		return -32700 // parse error
	}
	return -32600 // invalid request
}

// cleanPath is the path rules match: cleaned (no "." or ".." segments,
// no repeated slashes), absolute.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return path.Clean(p)
}

// readCalls reads the JSON-RPC call(s) of r's body, when it has one: a
// bounded prefix (readPrefix) is scanned (package jsonrpc) and put back in front of
// the rest, so the app gets the body unchanged. MCP's Mcp-Method and
// Mcp-Name headers, when sent, must agree with the body. status is set
// (with a message) for a request that must be refused: a body that is
// JSON but not a valid JSON-RPC request, a call that cannot be decided
// within the prefix, headers that disagree with it. Only when strict
// (rules with jsonrpc or mcp parts apply): otherwise a body that cannot be
// read as calls is taken for none, as a REST API's JSON is.
func readCalls(r *http.Request, strict bool) (calls []policy.Call, ids []jsontext.Value, batch bool, status int, msg, contextID string) {
	hMethod, hName := r.Header.Get("Mcp-Method"), r.Header.Get("Mcp-Name")
	if r.Method != http.MethodPost || r.Body == nil || r.Body == http.NoBody {
		if hMethod != "" {
			return []policy.Call{{Method: hMethod, Tool: hName}}, nil, false, 0, "", ""
		}
		return nil, nil, false, 0, "", ""
	}
	size := maxBodyScan
	if r.ContentLength >= 0 && r.ContentLength <= int64(size) {
		size = int(r.ContentLength) // the whole body, no more
	}
	buf, err := readPrefix(r.Body, size)
	n := len(buf)
	if errors.Is(err, errNotJSON) {
		err = nil // no call, below; the rest goes to the app
	}
	// The body may go on past what was read.
	truncated := err == nil && (r.ContentLength < 0 || r.ContentLength > int64(n))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, false, http.StatusBadRequest, "body unreadable", ""
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	trimmed := bytes.TrimLeft(buf, " \t\r\n")
	if len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') {
		return nil, nil, false, 0, "", "" // not JSON: no call
	}
	body, err := jsonrpc.Scan(buf, truncated, maxBodyScan)
	if !strict && (err != nil || slices.ContainsFunc(body.Calls, func(c jsonrpc.Call) bool { return !c.Complete })) {
		return nil, nil, false, 0, "", "" // no rule asks: what cannot be read is no call
	}
	if errors.Is(err, jsonrpc.ErrNotJSONRPC) && len(body.Calls) > 0 &&
		!slices.ContainsFunc(body.Calls, func(c jsonrpc.Call) bool { return !c.Complete || c.Method != "" }) {
		return nil, nil, false, 0, "", "" // whole JSON objects without a method: another API's JSON
	}
	if err != nil {
		if errors.Is(err, jsonrpc.ErrInvalid) {
			return nil, nil, trimmed[0] == '[', http.StatusBadRequest, "Invalid JSON-RPC request", ""
		}
		return nil, nil, trimmed[0] == '[', http.StatusRequestEntityTooLarge, "Request too large to authorize", ""
	}
	for _, c := range body.Calls {
		if !c.Complete && (c.Method == "" || c.Method == policy.MCPToolsCall && c.Name == "") {
			return nil, nil, body.Batch, http.StatusRequestEntityTooLarge, "Request too large to authorize", ""
		}
		pc := policy.Call{Method: c.Method}
		if c.Method == policy.MCPToolsCall {
			pc.Tool = c.Name
		}
		calls = append(calls, pc)
		ids = append(ids, c.ID)
		if contextID == "" {
			contextID = c.ContextID
		}
	}
	if hMethod != "" && (body.Batch || len(calls) != 1 || calls[0].Method != hMethod || !nameAgrees(hMethod, hName, body.Calls[0].Name)) {
		return nil, ids, body.Batch, http.StatusBadRequest, "Mcp-Method or Mcp-Name header disagrees with the body", ""
	}
	return calls, ids, body.Batch, 0, "", contextID
}

// nameAgrees reports whether an Mcp-Name header agrees with the body's
// params.name for the methods whose name is params.name (tools/call,
// prompts/get; resources/read names its URI, which is not compared). The
// header may carry its value base64-encoded as "=?base64?...?=".
func nameAgrees(method, header, name string) bool {
	if header == "" || (method != policy.MCPToolsCall && method != "prompts/get") {
		return true
	}
	if enc, ok := strings.CutPrefix(header, "=?base64?"); ok {
		if enc, ok = strings.CutSuffix(enc, "?="); ok {
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return false
			}
			header = string(b)
		}
	}
	return header == name
}

// jsonRPCError answers with status and a JSON-RPC error object per call
// that has an id (a batch: an array; a single call or none: one object,
// id null when unknown). It names no internals.
func jsonRPCError(w http.ResponseWriter, status int, batch bool, ids []jsontext.Value, code int, msg string) {
	type errObj struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	type resp struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   errObj          `json:"error"`
	}
	var out []resp
	for _, id := range ids {
		if id == nil {
			continue // a notification gets no answer
		}
		out = append(out, resp{"2.0", json.RawMessage(id), errObj{code, msg}})
	}
	if len(out) == 0 {
		out = append(out, resp{"2.0", json.RawMessage("null"), errObj{code, msg}})
	}
	var body []byte
	if batch {
		body, _ = json.Marshal(out)
	} else {
		body, _ = json.Marshal(out[0])
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n')) //nolint:errcheck // the client may be gone
}

// readPrefix reads the first size bytes of body, like io.ReadFull, but
// stops as soon as the first bytes show the body is not JSON: a stream
// of another kind (gRPC's frames, an upload the app answers as it comes)
// goes to the app with what was read, not held until size bytes or its
// end arrive.
func readPrefix(body io.Reader, size int) ([]byte, error) {
	buf := make([]byte, size)
	n := 0
	for n < size {
		m, err := body.Read(buf[n:])
		n += m
		if err != nil {
			if err == io.EOF && n > 0 && n < size {
				err = io.ErrUnexpectedEOF // as io.ReadFull says it
			}
			return buf[:n], err
		}
		if t := bytes.TrimLeft(buf[:n], " \t\r\n"); len(t) > 0 && t[0] != '{' && t[0] != '[' {
			return buf[:n], errNotJSON
		}
	}
	return buf, nil
}

// errNotJSON ends readPrefix early: the body is not JSON.
var errNotJSON = errors.New("body is not JSON")
