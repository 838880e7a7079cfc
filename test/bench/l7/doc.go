// Package l7 benchmarks requests through the mesh on a two-node
// Kubernetes-mode lab whose ztunnels run with --http-per-request: a client
// pod on n1 and a server pod (bench-l7-server: POST /echo returns the body,
// /mcp is a go-sdk MCP server with tool "echo") on n2, in four rows measured
// in one run:
//
//   - direct: both pods outside the mesh, by pod IP;
//   - mesh L4: a Service port declared appProtocol tcp, so the tunnels carry
//     the bytes over HBONE without reading them;
//   - mesh L7: a Service whose ports are declared http and agentmesh.io/mcp,
//     so the source tunnel proxies each request (balanced per request,
//     counted, traced when tracing is on);
//   - mesh L7 + policy: as mesh L7 after an AgentPolicy with an http rule
//     (POST /echo) and an mcp rule (tool echo) selects the server, so the
//     destination tunnel also decides each request.
//
// Each row runs the HTTP client (bench-l7-client http: open loop at --rate
// over --conns keep-alive connections, --size-byte bodies each way; a
// request waiting for a busy connection counts from its due time) and the
// MCP client (bench-l7-client mcp: --l7-mcp-sessions sessions calling
// tools/call back to back). The tables give p50/p99 and their ratio and
// difference to direct, MCP calls per second and their ratio, the CPU time
// both ztunnels spent per 1000 answered requests (all their threads, from
// /proc), their summed RSS after the run, and how many requests each tunnel
// counted in agentmesh_requests_total (source on n1, destination on n2):
// the L4 row must count none, the L7 rows at least every answered request
// in the source tunnel, and the policy row in the destination's too, else
// the row fails.
package l7
