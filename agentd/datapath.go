// Package agentd is the node agent: it loads and pins the eBPF datapath,
// enrolls the pods of its node that the mesh config marks as enrolled, and
// hands each one's network namespace to ztunnel.
//
// The mesh config comes from a local file (standalone mode, --config; each
// workload names its netns) or from the controller's config stream
// (Kubernetes mode, --controller; a pod's netns is found through its cgroup
// by a NetnsFinder).
package agentd

import (
	"context"
	"os"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/internal/handoff"
)

// Datapath is the part of *loader.Datapath the agent uses. Enroll and
// Unenroll are idempotent; Close keeps the pins, so capture outlives agentd.
type Datapath interface {
	// Enroll captures the network namespace at netnsPath and returns its
	// cookie.
	Enroll(netnsPath string) (cookie uint64, err error)
	// Unenroll stops capturing the namespace with cookie.
	Unenroll(cookie uint64) error
	// Enrolled lists the cookies currently captured, those of earlier runs
	// included.
	Enrolled() ([]uint64, error)
	// Close releases the datapath without detaching anything.
	Close() error
}

// Handoff is the part of *handoff.Server the reconciler uses.
type Handoff interface {
	// Upsert hands pod p (a duplicate of netns) to ztunnel.
	Upsert(p handoff.Pod, netns *os.File)
	// UpsertGated is Upsert for a pod whose start waits on it; wait
	// returns once ztunnel set it up, or why not.
	UpsertGated(p handoff.Pod, netns *os.File) (wait func(context.Context) error)
	// Remove takes the pod away from ztunnel; it returns once ztunnel has
	// acknowledged (bounded by a timeout) or when no ztunnel is connected.
	Remove(uid string)
}

var (
	_ Datapath = (*loader.Datapath)(nil)
	_ Handoff  = (*handoff.Server)(nil)
)
