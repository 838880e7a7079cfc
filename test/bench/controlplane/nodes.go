package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/configclient"
)

// ztunnel is the component the bench's stream clients speak as.
const ztunnel = configapi.ComponentZtunnel

// markPrefix names the port each measured change adds: bench-<k>.
const markPrefix = "bench-"

// marks records when change k was first seen (by a node's OnConfig or the
// baseline informer).
type marks struct {
	mu   sync.Mutex
	seen map[int]time.Time // guarded by mu
	kick chan struct{}     // shared: signalled after every new mark or config
}

func newMarks(kick chan struct{}) *marks { return &marks{seen: map[int]time.Time{}, kick: kick} }

// record notes mark k at now unless it was seen before.
func (m *marks) record(k int, now time.Time) {
	m.mu.Lock()
	if _, ok := m.seen[k]; !ok {
		m.seen[k] = now
	}
	m.mu.Unlock()
	kickOf(m.kick)
}

func (m *marks) get(k int) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.seen[k]
	return t, ok
}

func kickOf(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// markOf is the change number a service's ports carry, 0 if none.
func markOf(ports []meshconfig.ServicePort) int {
	for _, p := range ports {
		if n, ok := strings.CutPrefix(p.Name, markPrefix); ok {
			k, _ := strconv.Atoi(n)
			return k
		}
	}
	return 0
}

// summary is what a node's last config held of the bench's objects.
type summary struct {
	workloads int // all workloads
	services  int // the bench's services
	endpoints int // ready endpoints of the bench's services
}

// node is one node's in-process config stream client (component ztunnel).
type node struct {
	name   string
	target string // namespace/name of the service the changes touch
	client *configclient.Client
	marks  *marks

	mu      sync.Mutex
	last    summary // guarded by mu
	applied int     // guarded by mu: configs applied
}

// onConfig records the config's summary and the change mark of the target
// service; the client acks the version after it returns nil.
func (n *node) onConfig(c *meshconfig.Config) error {
	now := time.Now()
	s := summary{workloads: len(c.Workloads)}
	for _, svc := range c.Services {
		if !strings.HasPrefix(svc.Namespace, "bench-") {
			continue
		}
		s.services++
		for _, e := range svc.Endpoints {
			if e.Ready {
				s.endpoints++
			}
		}
		if svc.Key() == n.target {
			if k := markOf(svc.Ports); k > 0 {
				n.marks.record(k, now)
			}
		}
	}
	n.mu.Lock()
	n.last = s
	n.applied++
	n.mu.Unlock()
	kickOf(n.marks.kick)
	return nil
}

func (n *node) summary() summary {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// nodes are all stream clients; Close stops them and waits.
type nodes struct {
	list   []*node
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
}

// connectNodes starts one client per node against the controller.
func connectNodes(o Options, c *controller, caFile, dir string, log *slog.Logger) (*nodes, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := &nodes{cancel: cancel, kick: make(chan struct{}, 1)}
	tns, tname := o.serviceRef(0)
	for i := range o.Nodes {
		n := &node{name: nodeName(i), target: tns + "/" + tname, marks: newMarks(ns.kick)}
		cl, err := newClient(c.grpc, caFile, filepath.Join(dir, nodeName(i)+".token"), n, log)
		if err != nil {
			return nil, errors.Join(err, ns.Close())
		}
		n.client = cl
		ns.list = append(ns.list, n)
		ns.wg.Go(func() { cl.Run(ctx) })
	}
	return ns, nil
}

// Close stops every client and waits for them.
func (ns *nodes) Close() error {
	ns.cancel()
	ns.wg.Wait()
	var errs []error
	for _, n := range ns.list {
		errs = append(errs, n.client.Close())
	}
	return errors.Join(errs...)
}

// wait blocks until cond holds (checked after every config or mark).
func (ns *nodes) wait(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for !cond() {
		select {
		case <-ns.kick:
		case <-t.C:
			return fmt.Errorf("wait for %s: timed out after %v", what, timeout)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		}
	}
	return nil
}

// synced reports whether every node's config holds all the bench's
// services and ready endpoints.
func (ns *nodes) synced(o Options) bool {
	for _, n := range ns.list {
		s := n.summary()
		if s.services != o.Services || s.endpoints != o.Pods || s.workloads < o.Pods {
			return false
		}
	}
	return true
}

// applied is the number of configs all nodes applied so far.
func (ns *nodes) applied() int {
	total := 0
	for _, n := range ns.list {
		n.mu.Lock()
		total += n.applied
		n.mu.Unlock()
	}
	return total
}

// seen is the first and the last time a node saw change k; ok is false
// until every node has.
func (ns *nodes) seen(k int) (first, last time.Time, ok bool) {
	for _, n := range ns.list {
		t, seen := n.marks.get(k)
		if !seen {
			return time.Time{}, time.Time{}, false
		}
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	return first, last, true
}
