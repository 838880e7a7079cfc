package ztunnel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/api/policy"
)

// Rounds of TestL7PolicyMCPSessions's concurrent sessions, and how long
// each calls.
const (
	stressRounds = 20
	stressFor    = 100 * time.Millisecond
)

// TestL7PolicyMCPSessions: go-sdk MCP sessions (streamable HTTP: the
// initialize POST answered as an event stream, the standalone GET event
// stream, the DELETE at close) opened and closed one after another and a
// few at a time through both tunnels proxying per request, with b's
// requests decided by rules with http and mcp parts (as the L7 benchmark's
// policy row): every Connect and CallTool succeeds.
func TestL7PolicyMCPSessions(t *testing.T) {
	e := newHTTPEnv(t, "http", "uid-b")
	ln, err := e.b.AppListen(8092)
	if err != nil {
		t.Fatal(err)
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "echo", Version: "1.0.0"}, nil)
	type echoArgs struct {
		Arg string `json:"arg"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "answers its argument"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Arg}}}, nil, nil
		})
	mux := http.NewServeMux()
	// The fake pods' addresses are loopback ones.
	opts := &mcp.StreamableHTTPOptions{DisableLocalhostProtection: true}
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts))
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	authz := target(policy.MTLSPermissive, agentPolicy("bench", policy.ActionAllow,
		l7Rule(&policy.HTTPMatch{Methods: []string{"POST"}, Paths: []string{"/echo"}}, nil, nil),
		l7Rule(nil, nil, &policy.MCPMatch{Tools: []string{"echo"}}),
	))
	c := e.config(authz)
	c.Workloads = append(c.Workloads, e.node.Index().Config.Workloads[2:]...)
	vip := netip.MustParseAddrPort("10.96.0.9:80")
	c.Services = append(e.node.Index().Config.Services, meshconfig.Service{
		Name: "mcp", Namespace: "agents", VIPs: []netip.Addr{vip.Addr()},
		Ports:     []meshconfig.ServicePort{{Name: "mcp", Port: 80, TargetPort: 8092, Protocol: "TCP", AppProtocol: "agentmesh.io/mcp"}},
		Endpoints: []meshconfig.Endpoint{{WorkloadUID: "uid-b", IPs: []netip.Addr{e.b.IP}, Ready: true}},
	})
	e.node.SetConfig(c)

	session := func(ctx context.Context, k int) error {
		tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true, IdleConnTimeout: time.Minute,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.a.AppDial(ctx, vip) }}
		defer tr.CloseIdleConnections()
		cl := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "1.0.0"}, nil)
		s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://mcp.agents/mcp",
			HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1}, nil)
		if err != nil {
			return fmt.Errorf("session %d: connect: %w", k, err)
		}
		defer s.Close()
		for i := range 3 {
			want := fmt.Sprintf("%d-%d", k, i)
			out, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"arg": want}})
			if err != nil {
				return fmt.Errorf("session %d: call %d: %w", k, i, err)
			}
			if tc, ok := out.Content[0].(*mcp.TextContent); out.IsError || len(out.Content) != 1 || !ok || tc.Text != want {
				return fmt.Errorf("session %d: call %d: %+v", k, i, out)
			}
		}
		return s.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for k := range 100 {
		if err := session(ctx, k); err != nil {
			t.Error(err)
		}
	}
	var wg sync.WaitGroup
	// Like the bench: 4 sessions at once, each calling back to back for a
	// while, then all closed.
	for round := range stressRounds {
		var sessions []*mcp.ClientSession
		var trs []*http.Transport
		for j := range 4 {
			tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true, IdleConnTimeout: time.Minute,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.a.AppDial(ctx, vip) }}
			trs = append(trs, tr)
			cl := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "1.0.0"}, nil)
			s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://mcp.agents/mcp",
				HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1}, nil)
			if err != nil {
				t.Errorf("round %d session %d: connect: %v", round, j, err)
				continue
			}
			sessions = append(sessions, s)
		}
		stop := time.Now().Add(stressFor)
		for j, s := range sessions {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"arg": "x"}}); err != nil {
						t.Errorf("round %d session %d call %d: %v", round, j, i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		for _, s := range sessions {
			s.Close()
		}
		for _, tr := range trs {
			tr.CloseIdleConnections()
		}
	}
	for round := range 10 {
		for j := range 4 {
			wg.Go(func() {
				if err := session(ctx, 1000+round*10+j); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
}
