// Package services benchmarks connections to a Kubernetes Service's
// ClusterIP (VIP) through the mesh next to the same traffic by pod IP and
// without the mesh, on one Kubernetes-mode lab (test/lab: real apiserver,
// controller, agentd and ztunnel) with two nodes. It measures three rows,
// one after the other, in one run:
//
//	direct      a client pod on n1 to a server pod on n2 by pod IP, both in
//	            a namespace not labelled for the mesh (no ztunnel involved)
//	mesh pod IP an enrolled client pod on n1 to an enrolled server pod on
//	            n2 by pod IP (HBONE over mTLS between the nodes' ztunnels)
//	mesh VIP    the same client to the ClusterIP of a Service whose only
//	            endpoint is that same server pod: n1's ztunnel resolves the
//	            VIP to the endpoint (balancer) and carries the connection
//	            over HBONE like the row above
//
// The Service has one endpoint on purpose: the VIP row and the pod-IP row
// reach the same server process over the same nodes, so their difference
// is what resolving the VIP and choosing the endpoint cost. Every server
// runs `meshlab bench-server`; every client is `meshlab bench-client` run
// inside the client pod.
//
// Each row measures, after a short warm-up:
//
//   - latency: `bench-client latency`, the open-loop 1 KiB echo of the
//     data-path benchmark (package bench): Rate requests per second over
//     Conns persistent connections for Duration; p50/p90/p99 of the
//     answered requests, errors the unanswered.
//   - new connections: `bench-client connect`: Concurrency workers each
//     dial, echo one Size-byte frame, close, and start over, for
//     ConnectDuration; connections per second and the p50/p99 of one
//     connection's dial-to-echo time.
//
// Then the path is checked in ztunnel's access log: the direct server's
// address appears in no ztunnel's log; every measured connection of the
// mesh rows has an outbound line on n1 (mtls, not passthrough), without a
// Service for the pod-IP row and with dst_service svc-bench/bench-echo and
// the server pod as upstream for the VIP row, whose balancer on n1 also
// counted a pick per connection. Nothing here asserts a timing.
//
// The client pods allow reusing local ports in TIME_WAIT after a second
// (net.ipv4.tcp_tw_reuse=1 in their network namespaces, as load
// generators set it): the client closes first, and without reuse the
// ephemeral port range would cap a row at about 28k connections a minute.
//
// # Reading the table
//
// A run on a busy two-CPU machine (load average 12, other builds running):
//
//	row          path                requests errors  p50(us)  p90(us)  p99(us)   conns/s   conns errors conn p50(us) conn p99(us)
//	direct       direct                  2500      0    155.4    518.4  98519.9    2703.0   13542      0       2502.9       9996.9
//	mesh pod IP  hbone+mtls              2500      0    853.3   1697.9  20670.4     744.3    3725      0       9849.4      25912.0
//	mesh VIP     hbone+mtls via svc      2500      0    913.1   1496.7   4810.9     897.1    4492      0       8291.8      20252.6
//
//	ratios (latency and connection time > 1: slower; conns/s < 1: fewer new connections per second):
//	  mesh pod IP / direct:    p50 x5.49  p90 x3.28  p99 x0.21  conns/s x0.28  conn p50 x3.94  conn p99 x2.59
//	  mesh VIP / direct:       p50 x5.88  p90 x2.89  p99 x0.05  conns/s x0.33  conn p50 x3.31  conn p99 x2.03
//	  mesh VIP / mesh pod IP:  p50 x1.07  p90 x0.88  p99 x0.23  conns/s x1.21  conn p50 x0.84  conn p99 x0.78
//
// requests, errors and p50-p99 are the latency run's, read as in package
// bench's data-path table. conns/s is how many connections completed
// (dial, echo, close) per second with Concurrency of them in flight: a
// closed loop, so it is about Concurrency divided by the mean connection
// time, and it is what this machine's CPUs manage with the client, both
// ztunnels and the server sharing them; conns and errors count them.
// conn p50/p99 is one connection's time from the start of its dial to its
// echo, which includes waiting for a CPU behind the other workers.
//
// A new mesh connection costs, beyond direct, an accept in n1's ztunnel,
// a new HTTP/2 CONNECT stream on the pooled mTLS connection to n2's
// ztunnel (no TLS handshake per connection), n2's ztunnel dialing the
// server, and an access log line on each side; that is the mesh/direct
// ratio. The VIP/pod-IP ratio is what resolving the VIP and the
// balancer's pick add on top: near x1, and on a shared machine
// differences of some 20% either way are noise (above, the VIP row came
// out faster), so compare it over a few runs on a quiet machine, and
// compare tails (p99) not at all on a busy one (the last line gives the
// load average).
package services
