// Package controlplane benchmarks the controller on a real Kubernetes control
// plane (test/lab/kubecp, on loopback, no network namespaces): it creates
// Services and Pods as API objects (their status set as a kubelet would),
// runs the real controller binary, connects one in-process config stream
// client per node, and measures the controller's memory and the time from a
// Service change until every node's stream has received and acked it,
// next to the time a plain client-go informer needs to see the same change
// (the Kubernetes watch floor).
package controlplane

import (
	"errors"
	"log/slog"
	"path/filepath"
	"time"
)

// Options size and place a run.
type Options struct {
	// BinDir holds the controller binary and kube/ (etcd, kube-apiserver,
	// kube-controller-manager from make kube).
	BinDir string
	// Manifest is the rendered chart whose Namespace, ServiceAccounts and
	// RBAC are applied (default: deploy/manifests/agentmesh.yaml of the
	// module, else ../deploy/manifests/agentmesh.yaml next to BinDir).
	Manifest   string
	Nodes      int           // Node objects, one stream client each (default 10)
	Namespaces int           // mesh-enabled namespaces (default 5)
	Services   int           // Services (default 100)
	Pods       int           // Pods, spread over services and nodes (default 2000)
	Changes    int           // Service changes measured (default 20)
	Settle     time.Duration // wait after the initial sync before memory is read (default 3s)
	// Debounce is the controller's --debounce (0: its default).
	Debounce time.Duration
	// ProfileDir, when set, receives the controller's CPU profile of the
	// whole run (controller.cpu.prof) and its allocation profile at exit
	// (controller.alloc.prof), for go tool pprof with bin/controller, and
	// the same of this process (receivers.cpu.prof, receivers.alloc.prof:
	// the node stream clients) from the nodes connecting to the end.
	ProfileDir string
	Logger     *slog.Logger // progress (nil: discard)
}

// withDefaults fills in zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Nodes, 10)
	def(&o.Namespaces, 5)
	def(&o.Services, 100)
	def(&o.Pods, 2000)
	def(&o.Changes, 20)
	if o.Settle == 0 {
		o.Settle = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BinDir == "":
		return o, errors.New("control plane bench: no bin dir")
	case o.Nodes < 1 || o.Namespaces < 1 || o.Services < 1 || o.Changes < 1 || o.Pods < 0:
		return o, errors.New("control plane bench: nodes, namespaces, services and changes must be positive")
	case o.Pods > 60000:
		return o, errors.New("control plane bench: at most 60000 pods (one /16 of addresses)")
	}
	return o, nil
}

// kubeBinDir is where kubecp finds its binaries.
func (o Options) kubeBinDir() string { return filepath.Join(o.BinDir, "kube") }
