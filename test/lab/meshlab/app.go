package meshlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// runApp dispatches `meshlab app <name>`.
func runApp(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: app needs one of echo, http, send, stream, dialer, burst, flood, dns-query, dns-upstream, dns-flood, mcp-server, mcp-call, a2a-server, a2a-call, http-do, sse-get, grpc-call, pause", ErrUsage)
	}
	switch args[0] {
	case "echo":
		return appEcho(ctx, args[1:], stdout)
	case "http":
		return appHTTP(ctx, args[1:], stdout)
	case "send":
		return appSend(ctx, args[1:], stdout)
	case "stream":
		return appStream(ctx, args[1:], stdout)
	case "burst":
		return appBurst(ctx, args[1:], stdout)
	case "dialer":
		return appDialer(ctx, args[1:], stdout)
	case "flood":
		return appFlood(ctx, args[1:], stdout)
	case "dns-query":
		return appDNSQuery(ctx, args[1:], stdout)
	case "dns-upstream":
		return appDNSUpstream(ctx, args[1:], stdout)
	case "dns-flood":
		return appDNSFlood(ctx, args[1:], stdout)
	case "mcp-server":
		return appMCPServer(ctx, args[1:], stdout)
	case "mcp-call":
		return appMCPCall(ctx, args[1:], stdout)
	case "a2a-server":
		return appA2AServer(ctx, args[1:], stdout)
	case "a2a-call":
		return appA2ACall(ctx, args[1:], stdout)
	case "http-do":
		return appHTTPDo(ctx, args[1:], stdout)
	case "sse-get":
		return appSSEGet(ctx, args[1:], stdout)
	case "grpc-call":
		return appGRPCCall(ctx, args[1:], stdout)
	case "pause":
		// A pod sandbox's process (the lab's images have no other): it
		// holds the pod's namespaces until SIGTERM or SIGINT.
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("%w: unknown app %q", ErrUsage, args[0])
}

// writeJSON prints v as one JSON line.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
