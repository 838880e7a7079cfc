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
package services

import (
	"cmp"
	"errors"
	"log/slog"
	"path/filepath"
	"time"
)

// Options size a run. Zero fields take the defaults in brackets.
type Options struct {
	// BinDir holds agentd, ztunnel, meshlab, controller and kube/.
	BinDir string
	// Latency: Rate requests/s [500] over Conns connections [8] for
	// Duration [5s], Size-byte echoes [1024] (also the new connections').
	Duration time.Duration
	Rate     float64
	Conns    int
	Size     int
	// New connections: Concurrency at once [8] for ConnectDuration [5s].
	ConnectDuration time.Duration
	Concurrency     int
	Logger          *slog.Logger // progress (nil: discard)
}

func (o Options) withDefaults() (Options, error) {
	o.Duration = cmp.Or(o.Duration, 5*time.Second)
	o.Rate = cmp.Or(o.Rate, 500)
	o.Conns = cmp.Or(o.Conns, 8)
	o.Size = cmp.Or(o.Size, 1024)
	o.ConnectDuration = cmp.Or(o.ConnectDuration, 5*time.Second)
	o.Concurrency = cmp.Or(o.Concurrency, 8)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BinDir == "":
		return o, errors.New("services bench: no bin dir")
	case o.Duration < 0 || o.ConnectDuration < 0 || o.Rate < 0 || o.Conns < 0 || o.Size < 0 || o.Concurrency < 0:
		return o, errors.New("services bench: negative size")
	}
	abs, err := filepath.Abs(o.BinDir)
	o.BinDir = abs
	return o, err
}

func (o Options) meshlab() string    { return filepath.Join(o.BinDir, "meshlab") }
func (o Options) kubeBinDir() string { return filepath.Join(o.BinDir, "kube") }
