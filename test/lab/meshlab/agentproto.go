package meshlab

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2aclient"
	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/a2aproject/a2a-go/a2asrv/eventqueue"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Sample agents on the official SDKs: an MCP server and client
// (modelcontextprotocol/go-sdk, streamable HTTP) and an A2A server and
// client (a2aproject/a2a-go, JSON-RPC), for the tests and the demo.

// MCPPath and A2APath are where the sample servers answer.
const (
	MCPPath = "/mcp"
	A2APath = "/a2a"
)

// appMCPServer is `app mcp-server --name NAME --listen :8080 --tools a,b`:
// an MCP server whose tools each answer "NAME: TOOL(ARG)".
func appMCPServer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app mcp-server", flag.ContinueOnError)
	name := fs.String("name", "tools", "agent name")
	listen := fs.String("listen", ":8080", "address to listen on")
	tools := fs.String("tools", "search", "tool names, comma separated")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	server := mcp.NewServer(&mcp.Implementation{Name: *name, Version: "1.0.0"}, nil)
	type toolArgs struct {
		Arg string `json:"arg" jsonschema:"anything"`
	}
	for _, tool := range strings.Split(*tools, ",") {
		mcp.AddTool(server, &mcp.Tool{Name: tool, Description: "answers with the agent's name"},
			func(ctx context.Context, req *mcp.CallToolRequest, in toolArgs) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s: %s(%s)", *name, tool, in.Arg)}}}, nil, nil
			})
	}
	mux := http.NewServeMux()
	mux.Handle(MCPPath, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	return serveAgent(ctx, *listen, mux, stdout, "mcp server "+*name)
}

// MCPCallResult is one line of `app mcp-call`.
type MCPCallResult struct {
	Tool  string `json:"tool"`
	OK    bool   `json:"ok"`
	Text  string `json:"text,omitempty"`
	Error string `json:"error,omitempty"`
	// Session is the MCP session the call went on.
	Session string `json:"session"`
}

// appMCPCall is `app mcp-call --to URL --call TOOL [--call TOOL]...`: one
// MCP session (initialize, then each tools/call in order), a JSON line per
// call. It fails only when the session cannot be opened.
func appMCPCall(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app mcp-call", flag.ContinueOnError)
	to := fs.String("to", "", "the MCP endpoint URL")
	timeout := fs.Duration("timeout", 20*time.Second, "bound of the whole session")
	var calls []string
	fs.Func("call", "a tool to call (repeatable)", func(v string) error { calls = append(calls, v); return nil })
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "meshlab", Version: "1.0.0"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: *to, MaxRetries: -1}, nil)
	if err != nil {
		return fmt.Errorf("mcp connect %s: %w", *to, err)
	}
	defer session.Close()
	for _, tool := range calls {
		res := MCPCallResult{Tool: tool, Session: session.ID()}
		out, err := session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"arg": "x"}})
		switch {
		case err != nil:
			res.Error = err.Error()
		case out.IsError:
			res.Error = "tool error"
		default:
			res.OK = true
			for _, c := range out.Content {
				if t, ok := c.(*mcp.TextContent); ok {
					res.Text += t.Text
				}
			}
		}
		if err := writeJSON(stdout, res); err != nil {
			return err
		}
	}
	return nil
}

// appA2AServer is `app a2a-server --name NAME --listen :8080 [--mcp-to
// URL --mcp-tool TOOL]`: an A2A agent (JSON-RPC at /a2a, its card at the
// well-known path) that answers every message with "NAME: TEXT"; with
// --mcp-to it first calls TOOL(TEXT) on that MCP server, passing the
// request's traceparent on, and adds the tool's answer. Faults are set at
// run time as app http's are (POST /fault, GET /stats).
func appA2AServer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app a2a-server", flag.ContinueOnError)
	name := fs.String("name", "agent", "agent name")
	listen := fs.String("listen", ":8080", "address to listen on")
	mcpTo := fs.String("mcp-to", "", "an MCP endpoint URL to call for each message")
	mcpTool := fs.String("mcp-tool", "", "the tool to call there")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if (*mcpTo == "") != (*mcpTool == "") {
		return fmt.Errorf("%w: --mcp-to and --mcp-tool go together", ErrUsage)
	}
	card := &a2a.AgentCard{Name: *name, Description: "meshlab sample agent", URL: "http://" + *name + A2APath,
		PreferredTransport: a2a.TransportProtocolJSONRPC, DefaultInputModes: []string{"text"}, DefaultOutputModes: []string{"text"},
		Skills: []a2a.AgentSkill{{ID: "echo", Name: "echo", Description: "answers with its name", Tags: []string{"echo"}}}}
	mux := http.NewServeMux()
	mux.Handle(A2APath, withTraceparent(a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(&echoExecutor{name: *name, mcpTo: *mcpTo, tool: *mcpTool}))))
	mux.Handle(a2asrv.WellKnownAgentCardPath, a2asrv.NewStaticAgentCardHandler(card))
	// Faults as app http's, set at run time (POST /fault).
	h, err := newFaulty(mux, Fault{FailStatus: http.StatusServiceUnavailable})
	if err != nil {
		return err
	}
	return serveAgent(ctx, *listen, h, stdout, "a2a agent "+*name)
}

// echoExecutor answers each message with the agent's name and its text,
// after calling tool on the MCP server mcpTo when set.
type echoExecutor struct{ name, mcpTo, tool string }

func (e *echoExecutor) Execute(ctx context.Context, rc *a2asrv.RequestContext, q eventqueue.Queue) error {
	var text string
	if rc.Message != nil {
		for _, p := range rc.Message.Parts {
			if t, ok := p.(a2a.TextPart); ok {
				text += t.Text
			}
		}
	}
	answer := e.name + ": " + text
	if e.mcpTo != "" {
		out, err := callTool(ctx, e.mcpTo, e.tool, text)
		if err != nil {
			answer += "; " + e.tool + " failed: " + err.Error()
		} else {
			answer += "; " + out
		}
	}
	return q.Write(ctx, a2a.NewMessage(a2a.MessageRoleAgent, a2a.TextPart{Text: answer}))
}

// callTool opens an MCP session to url, calls tool(arg) and returns its
// text; the session's requests carry ctx's traceparent.
func callTool(ctx context.Context, url, tool, arg string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "meshlab", Version: "1.0.0"}, nil)
	hc := &http.Client{Transport: traceparentTransport{base: http.DefaultTransport}}
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return "", fmt.Errorf("mcp connect %s: %w", url, err)
	}
	defer session.Close()
	out, err := session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"arg": arg}})
	if err != nil {
		return "", err
	}
	if out.IsError {
		return "", errors.New("tool error")
	}
	var text string
	for _, c := range out.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			text += t.Text
		}
	}
	return text, nil
}

// traceparentKey carries an incoming request's W3C traceparent in its
// context, so the calls the agent makes for it continue the trace.
type traceparentKey struct{}

// withTraceparent puts the request's traceparent into its context.
func withTraceparent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp := r.Header.Get("Traceparent"); tp != "" {
			r = r.WithContext(context.WithValue(r.Context(), traceparentKey{}, tp))
		}
		h.ServeHTTP(w, r)
	})
}

// traceparentTransport sets the traceparent of each request: fixed, or
// else from the request's context (traceparentKey).
type traceparentTransport struct {
	base  http.RoundTripper
	fixed string
}

func (t traceparentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tp := t.fixed
	if v, ok := r.Context().Value(traceparentKey{}).(string); ok && tp == "" {
		tp = v
	}
	if tp != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Traceparent", tp)
	}
	return t.base.RoundTrip(r)
}

func (e *echoExecutor) Cancel(context.Context, *a2asrv.RequestContext, eventqueue.Queue) error {
	return nil
}

// A2ACallResult is one line of `app a2a-call`.
type A2ACallResult struct {
	Method string `json:"method"`
	OK     bool   `json:"ok"`
	Text   string `json:"text,omitempty"`
	Error  string `json:"error,omitempty"`
}

// appA2ACall is `app a2a-call --to URL [--send TEXT] [--cancel TASK]`: an
// A2A JSON-RPC client sending a message, then cancelling a task, a JSON
// line each.
func appA2ACall(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app a2a-call", flag.ContinueOnError)
	to := fs.String("to", "", "the agent's JSON-RPC URL")
	send := fs.String("send", "", "a message to send (message/send)")
	cancelTask := fs.String("cancel", "", "a task to cancel (tasks/cancel)")
	count := fs.Int("count", 1, "how many times to send the message")
	traceparent := fs.String("traceparent", "", "a W3C traceparent to send with every request")
	timeout := fs.Duration("timeout", 20*time.Second, "bound of all calls")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	hc := &http.Client{Transport: traceparentTransport{base: http.DefaultTransport, fixed: *traceparent}}
	client, err := a2aclient.NewFromEndpoints(ctx, []a2a.AgentInterface{{URL: *to, Transport: a2a.TransportProtocolJSONRPC}},
		a2aclient.WithJSONRPCTransport(hc))
	if err != nil {
		return fmt.Errorf("a2a client %s: %w", *to, err)
	}
	for range *count {
		if *send == "" {
			break
		}
		res := A2ACallResult{Method: "message/send"}
		out, err := client.SendMessage(ctx, &a2a.MessageSendParams{Message: a2a.NewMessage(a2a.MessageRoleUser, a2a.TextPart{Text: *send})})
		if err != nil {
			res.Error = err.Error()
		} else if m, ok := out.(*a2a.Message); ok {
			res.OK = true
			for _, p := range m.Parts {
				if t, ok := p.(a2a.TextPart); ok {
					res.Text += t.Text
				}
			}
		} else {
			res.OK = true
		}
		if err := writeJSON(stdout, res); err != nil {
			return err
		}
	}
	if *cancelTask != "" {
		res := A2ACallResult{Method: "tasks/cancel"}
		if _, err := client.CancelTask(ctx, &a2a.TaskIDParams{ID: a2a.TaskID(*cancelTask)}); err != nil {
			res.Error = err.Error()
		} else {
			res.OK = true
		}
		if err := writeJSON(stdout, res); err != nil {
			return err
		}
	}
	return nil
}

// serveAgent serves h on listen until ctx is done.
func serveAgent(ctx context.Context, listen string, h http.Handler, stdout io.Writer, what string) error {
	lns, err := listenAll(listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		fmt.Fprintf(stdout, "%s listening on %s\n", what, ln.Addr())
		go func() { errs <- serveHTTP(srv, ln) }()
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	return collect(errs, len(lns))
}

// HTTPDoResult is what `app http-do` prints.
type HTTPDoResult struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

// appHTTPDo is `app http-do --method M --url URL [--body B]`: one request,
// its status and body (at most 4 KiB) as a JSON line.
func appHTTPDo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app http-do", flag.ContinueOnError)
	method := fs.String("method", http.MethodGet, "request method")
	url := fs.String("url", "", "request URL")
	body := fs.String("body", "", "request body")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var res HTTPDoResult
	req, err := http.NewRequestWithContext(ctx, *method, *url, strings.NewReader(*body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		res.Error = err.Error()
		return writeJSON(stdout, res)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	res.Status, res.Body = resp.StatusCode, string(b)
	return writeJSON(stdout, res)
}

// SSEEvent is one line of `app sse-get`: an event's id, when the server
// sent it and when it arrived (unix nanoseconds; same clock in the lab).
type SSEEvent struct {
	ID       string `json:"id"`
	Sent     int64  `json:"sent"`
	Received int64  `json:"received"`
	Error    string `json:"error,omitempty"`
}

// appSSEGet is `app sse-get --url URL`: reads a server-sent event stream
// whose data are send times (app http's /sse) and prints each event as it
// arrives; a last line with error set if the stream broke.
func appSSEGet(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("app sse-get", flag.ContinueOnError)
	url := fs.String("url", "", "the event stream URL")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound of the whole stream")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return writeJSON(stdout, SSEEvent{Error: err.Error()})
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return writeJSON(stdout, SSEEvent{Error: resp.Status})
	}
	sc := bufio.NewScanner(resp.Body)
	var ev SSEEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.Sent, _ = strconv.ParseInt(strings.TrimPrefix(line, "data: "), 10, 64)
			ev.Received = time.Now().UnixNano()
		case line == "" && ev.ID != "":
			if err := writeJSON(stdout, ev); err != nil {
				return err
			}
			ev = SSEEvent{}
		}
	}
	if err := sc.Err(); err != nil {
		return writeJSON(stdout, SSEEvent{Error: err.Error()})
	}
	return nil
}
