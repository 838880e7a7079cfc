// Package policy benchmarks how fast an AgentPolicy takes effect: on a
// Kubernetes-mode lab (real apiserver, controller, agentd and ztunnel on
// every node) it applies and deletes a Deny policy that selects one pod per
// node, and times, from the API call, until a prober's connections to each
// node's pod are refused (applied) or echoed again (deleted). Next to it, a
// plain client-go informer on AgentPolicies gives the Kubernetes watch
// floor, and the table prints the ratio.
package policy

import (
	"errors"
	"log/slog"
	"path/filepath"
	"time"
)

// Options size and place a run.
type Options struct {
	// BinDir holds agentd, ztunnel, meshlab, controller and kube/.
	BinDir string
	Nodes  int // lab nodes, one target pod each (default 3)
	Rounds int // apply+delete rounds (default 10)
	// ProbeEvery is the pause between two probes of one target (default 5ms).
	ProbeEvery time.Duration
	Logger     *slog.Logger // progress (nil: discard)
}

func (o Options) withDefaults() (Options, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Rounds == 0 {
		o.Rounds = 10
	}
	if o.ProbeEvery == 0 {
		o.ProbeEvery = 5 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BinDir == "":
		return o, errors.New("policy bench: no bin dir")
	case o.Nodes < 1 || o.Nodes > 20 || o.Rounds < 1:
		return o, errors.New("policy bench: want 1-20 nodes and at least one round")
	}
	return o, nil
}

func (o Options) kubeBinDir() string { return filepath.Join(o.BinDir, "kube") }
