// Package bench measures what the mesh costs: latency and throughput of
// pod-to-pod TCP through AgentMesh against the same traffic without it, on
// one lab (test/lab) with the real agentd and ztunnel binaries.
//
// `make bench` runs `meshlab bench` (Run): it builds a two-node lab and
// measures five scenarios one after another, each with a fresh client and
// server pod in namespace "bench":
//
//	direct cross-node   client on n1, server on n2, neither enrolled (the baseline)
//	direct same-node    both on n1, neither enrolled
//	mesh cross-node     client on n1, server on n2, both enrolled
//	mesh same-node      both on n1, both enrolled
//	haproxy cross-node  client on n1, server on n2, neither enrolled, a HAProxy
//	                    mutual-TLS pair between them (what a user would set up
//	                    instead of a mesh; haproxy.go)
//
// The HAProxy pair is Debian's haproxy in each pod, TCP mode: the client
// pod's accepts plaintext on 127.0.0.1 and opens one TLS 1.3 connection per
// connection, with a client certificate, to the server pod's, which verifies
// it against the bench's CA and forwards to the app on 127.0.0.1. The ratio
// lines print each proxy's p50 over direct and, in parentheses, the latency
// it adds (proxied p50 - direct p50).
//
// Each scenario first warms up (servers listening, certificates issued,
// HBONE connections pooled) and then runs two measurements with the client
// (`meshlab bench-client`, Client) inside the client pod against the servers
// (`meshlab bench-server`, Server) inside the server pod:
//
//   - latency: 1 KiB request/response echo at a fixed aggregate rate (500/s)
//     over 8 persistent connections for 5s. The schedule is open loop: the
//     client sends at the planned times whether or not answers came back.
//     A request sent on time is timed from its send; one sent late because
//     its connection's writes were blocked (backpressure) is timed from when
//     it was due, so queueing inside the mesh counts (no coordinated
//     omission). Requests not answered correctly within 2s after the last
//     send are errors; the percentiles cover the answered ones.
//   - throughput: one connection writes 256 MiB; the server acknowledges
//     once it has received all of it, and the clock stops at that answer.
//
// After measuring, the scenario's path is checked in ztunnel's access log:
// every mesh connection must have gone through the client node's ztunnel
// and not as passthrough; no direct or HAProxy connection may have touched
// a ztunnel.
//
// # Reading the table
//
// Three rows and their ratios from a run on a busy two-CPU machine:
//
//	scenario           path         requests errors  p50(us)  p90(us)  p99(us)  max(us) throughput(Gbit/s)
//	direct cross-node  direct           2500      0    169.6    261.6    411.2   2903.3              20.53
//	mesh cross-node    hbone+mtls       2500      0    514.8    648.0    923.5   6933.4               4.27
//	haproxy cross-node haproxy+mtls     2500      0    382.6    499.7   1339.9  13696.6               4.37
//	  mesh cross-node vs direct cross-node: p50 x3.04 (+345us)  p90 x2.48  p99 x2.25  throughput x0.21
//	  haproxy cross-node vs direct cross-node: p50 x2.26 (+213us)  p90 x1.91  p99 x3.26  throughput x0.21
//
// requests is how many were scheduled (rate x duration) and errors how many
// of them got no correct answer.
// path is how ztunnel says it carried the traffic (hbone+mtls: HTTP/2
// CONNECT over mutual TLS; local: the same-node fast path, the two pods'
// sockets joined inside the node's ztunnel). p50 is the typical request; p99 and max show
// the tail, which on a shared machine is mostly other processes taking the
// CPU (the last line of the output gives the load average), so compare
// tails only between runs on a quiet machine. Each mesh
// scenario is compared with the direct scenario of the same placement. All
// pods, both ztunnels and the client share this machine's CPUs: the numbers
// say what the mesh costs relative to direct traffic here, not what a real
// cluster would reach. Nothing in this package asserts a timing.
//
// # Proxy cost
//
// For every proxied scenario (mesh and HAProxy) a second table gives what
// the processes carrying the traffic spent: their CPU time (user and
// system, from /proc/<pid>/stat, all carrying processes summed: both
// ztunnels, or both HAProxies) over the throughput run divided by the GB it
// moved, and their summed RSS, the largest of samples every 200 ms, under a
// load of 1000 req/s of 1 KiB echoes over the latency connections for 3 s.
// After it comes the memory per idle proxied connection (--idle-conns).
//
// # The other sections
//
// After the data-path table, `meshlab bench` prints four more, each from
// its own lab or control plane and each with the load average around it:
// the controller on a real Kubernetes control plane (package controlplane;
// --control-plane, --cp-*), AgentPolicy apply-to-enforcement times
// (package policy; --policy, --policy-*), and Services (package services;
// --services, --svc-*): on a two-node Kubernetes-mode lab, new connections
// per second (each one dial, one 1 KiB echo, close; `bench-client
// connect`) and the latency above, in three rows measured in one run:
// direct by pod IP, mesh by pod IP, and mesh by a Service's ClusterIP whose
// one endpoint is that same server pod, with the ratios mesh/direct and
// VIP/pod IP. Its latency rows take --rate, --conns, --size and --duration
// from this table's flags. Last, L7 (package l7; --l7, --l7-*): HTTP
// keep-alive request latency and MCP tools/call rate direct, through the
// mesh at L4, per request, and per request under an L7 AgentPolicy. Each
// package's documentation says how to read its table.
//
// The Go benchmarks (BenchmarkEchoRoundTrip, BenchmarkBulk) measure only
// ztunnel's HBONE code in one process on loopback, each against plain TCP in
// the same run.
package bench
