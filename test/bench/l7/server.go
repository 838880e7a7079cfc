package l7

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ServerCommand is the meshlab subcommand that runs Server.
const ServerCommand = "bench-l7-server"

// What the server answers.
const (
	EchoPath = "/echo" // POST: the body back
	MCPPath  = "/mcp"  // an MCP server (streamable HTTP) with one tool
	MCPTool  = "echo"  // answers its argument "arg" as text
)

// Server serves EchoPath and MCPPath on --listen until ctx is done.
func Server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(ServerCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "", "address to listen on, for example :8080")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", ServerCommand, err)
	}
	if *listen == "" || fs.NArg() > 0 {
		return fmt.Errorf("%s: want --listen ADDR", ServerCommand)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", ServerCommand, err)
	}
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", ServerCommand, err)
	}
	return nil
}

// Handler answers EchoPath and MCPPath.
func Handler() http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "bench", Version: "1.0.0"}, nil)
	type echoArgs struct {
		Arg string `json:"arg" jsonschema:"what to answer"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: MCPTool, Description: "answers its argument"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Arg}}}, nil, nil
		})
	mux := http.NewServeMux()
	mux.Handle(MCPPath, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	mux.HandleFunc("POST "+EchoPath, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxSize+1))
		if err != nil || len(body) > maxSize {
			http.Error(w, "body unreadable or over the limit", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	return mux
}
