// Command meshctl inspects a running AgentMesh.
//
//	meshctl policy check --from <ns>/<pod> --to <ns>/<pod> --port <n>
//
// explains whether a connection would be allowed and why: which
// AgentPolicy and which rule decided, or which default. The decision comes
// from the ztunnel of the destination's node (the data it enforces, read
// from its admin endpoint); the controller says which node that is and
// whether each policy was accepted. --from may also be a bare IP address
// (a client outside the mesh).
//
//	meshctl service endpoints <ns>/<service> [--ztunnel URL]
//
// shows a Service as one node's ztunnel routes it: its VIPs and ports,
// each endpoint with its pod, readiness, transport (HBONE or plain TCP),
// the identity its certificate must carry, and the balancer's state
// (connect latency EWMA, open connections, picks, failures).
//
//	meshctl stat [--metrics [netns=]URL]... [--by workload|edge] [--interval 5s]
//
// shows per-workload traffic from the node tunnels' metrics (like linkerd
// viz stat): each workload's open connections, new connections per second
// and bytes per second as a destination, or each caller -> callee edge
// with how it was secured; for requests proxied per request also their
// rate, success rate and p50/p95/p99 latency.
//
//	meshctl requests [--ztunnel [netns=]URL]... [--workload <ns>/<name>] [--limit N]
//
// shows the last HTTP requests the node tunnels proxied per request
// (like linkerd viz tap, but from each tunnel's ring of recent requests,
// ztunnel --recent-requests): when, which tunnel reported it, from and to
// which workload, method, path or agent call (tools/call search,
// message/send), status, duration and trace id, newest first, merged over
// the tunnels asked.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: meshctl <command>

commands:
  policy check --from <ns>/<pod>|<ip> --to <ns>/<pod> --port <n>
               explain the policy decision for a connection
  service endpoints <ns>/<service>
               show a Service's endpoints and their balancer state on a node
  stat [--metrics URL]... [--by workload|edge]
               per-workload traffic (connections, requests, latency) from the node tunnels' metrics
  requests [--ztunnel URL]... [--workload <ns>/<name>] [--limit N]
               the last requests the node tunnels proxied (method, path or MCP/A2A call, status, latency)

run "meshctl <command> -h" for flags
`

// run executes one command line and returns the exit status: 0 when the
// command ran, 1 when it failed, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) >= 2 && args[0] == "policy" && args[1] == "check" {
		return policyCheck(ctx, args[2:], stdout, stderr)
	}
	if len(args) >= 2 && args[0] == "service" && args[1] == "endpoints" {
		return serviceEndpoints(ctx, args[2:], stdout, stderr)
	}
	if len(args) >= 1 && args[0] == "stat" {
		return stat(ctx, args[1:], stdout, stderr)
	}
	if len(args) >= 1 && args[0] == "requests" {
		return requests(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 2
}
