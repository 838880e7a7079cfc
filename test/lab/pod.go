package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/meshconfig"
)

// PodSpec describes a pod to add.
type PodSpec struct {
	// Name is unique in the lab: lowercase letters, digits and '-'.
	Name string
	// Namespace defaults to "default".
	Namespace string
	// ServiceAccount defaults to "default".
	ServiceAccount string
	// Node is 1..Nodes.
	Node int
	// Enrolled puts the pod in the mesh.
	Enrolled bool
	// Labels are the workload's labels.
	Labels map[string]string
}

// Pod is a network namespace with a veth to its node, its own cgroup and a
// workload entry in the mesh config.
type Pod struct {
	// Name, Namespace, ServiceAccount, UID, Node and Enrolled are as in the mesh config.
	Name, Namespace, ServiceAccount, UID string
	Node                                 int
	Enrolled                             bool

	lab    *Lab
	index  int         // k in 198.19.<node>.<k>
	key    string      // l.pods key and netns/cgroup name: Name, or pod<uid> for a Kubernetes pod
	mounts []bindMount // what its processes see in place of host files (a Kubernetes pod's resolv.conf, hosts); guarded by lab.mu
}

var podNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// IPv4 is the pod's address 198.19.<node>.<k>.
func (p *Pod) IPv4() netip.Addr { return podIPv4(p.Node, p.index) }

// IPv6 is the pod's address fd00:19:<node>::<k>.
func (p *Pod) IPv6() netip.Addr { return podIPv6(p.Node, p.index) }

// NetnsName is the name of the pod's network namespace.
func (p *Pod) NetnsName() string { return p.lab.id + "-" + p.key }

// NetnsPath is /run/netns/<NetnsName>.
func (p *Pod) NetnsPath() string { return netnsPath(p.NetnsName()) }

// CgroupPath is the pod's cgroup directory.
func (p *Pod) CgroupPath() string { return filepath.Join(p.lab.nodeCgroup(p.Node), p.key) }

// nodeVeth is the name of the pod's veth end in the node netns.
func (p *Pod) nodeVeth() string { return fmt.Sprintf("veth%d", p.index) }

// workload is the pod's mesh config entry.
func (p *Pod) workload(labels map[string]string) meshconfig.Workload {
	return meshconfig.Workload{UID: p.UID, Name: p.Name, Namespace: p.Namespace,
		ServiceAccount: p.ServiceAccount, Node: nodeName(p.Node),
		IPs: []netip.Addr{p.IPv4(), p.IPv6()}, Labels: labels, Enrolled: p.Enrolled, Netns: p.NetnsPath()}
}

// Pod returns the pod called name, or nil.
func (l *Lab) Pod(name string) *Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pods[name]
}

// Pods returns the lab's pods sorted by name.
func (l *Lab) Pods() []*Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Pod, 0, len(l.pods))
	for _, p := range l.pods {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AddPod creates a pod and adds it to the mesh config. If the mesh runs,
// it waits until every running ztunnel has the new config in force and,
// for an enrolled pod, until its node's ztunnel has set the pod up.
func (l *Lab) AddPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	p, err := l.reservePod(spec)
	if err != nil {
		return nil, err
	}
	if err := l.setupPod(ctx, p, spec.Labels); err != nil {
		return nil, errors.Join(fmt.Errorf("add pod %s: %w", p.Name, err), l.removePod(ctx, p.Name, false))
	}
	l.log.Info("pod added", "pod", p.Name, "node", p.Node, "ipv4", p.IPv4(), "ipv6", p.IPv6(), "enrolled", p.Enrolled)
	return p, nil
}

// AddPods adds many pods at once, for scale: their netns, links and
// cgroups one after another, then one mesh config write for all of them,
// then, if the mesh runs, one wait until every node's ztunnel lists its
// enrolled ones (AddPod writes and waits once per pod). On error the pods
// made so far are removed again.
func (l *Lab) AddPods(ctx context.Context, specs []PodSpec) (*PodsAdded, error) {
	pods := make([]*Pod, 0, len(specs))
	undo := func(err error) (*PodsAdded, error) {
		for _, p := range pods {
			err = errors.Join(err, l.removePod(ctx, p.Name, false))
		}
		return nil, err
	}
	start := time.Now()
	for _, s := range specs {
		p, err := l.reservePod(s)
		if err != nil {
			return undo(err)
		}
		pods = append(pods, p)
		if err := l.setupPodNetwork(p); err != nil {
			return undo(fmt.Errorf("add pod %s: %w", p.Name, err))
		}
		if err := mkdirCgroup(p.CgroupPath()); err != nil {
			return undo(fmt.Errorf("add pod %s: %w", p.Name, err))
		}
	}
	res := &PodsAdded{Pods: pods, Setup: time.Since(start)}
	start = time.Now()
	l.mu.Lock()
	for i, p := range pods {
		l.cfg.Workloads = append(l.cfg.Workloads, p.workload(specs[i].Labels))
	}
	err := l.saveConfig()
	l.mu.Unlock()
	if err != nil {
		return undo(err)
	}
	if l.opts.StartMesh {
		if err := l.waitPodsListed(ctx, pods); err != nil {
			return undo(err)
		}
	}
	res.Mesh = time.Since(start)
	l.log.Info("pods added", "pods", len(pods), "setup", res.Setup, "mesh", res.Mesh)
	return res, nil
}

// PodsAdded is what AddPods made and how long it took.
type PodsAdded struct {
	Pods []*Pod
	// Setup is the pods' netns, links and cgroups; Mesh from the config
	// write until the ztunnels listed them (zero without StartMesh).
	Setup, Mesh time.Duration
}

// reservePod checks spec and claims the name and an address.
func (l *Lab) reservePod(spec PodSpec) (*Pod, error) {
	if !podNameRE.MatchString(spec.Name) {
		return nil, fmt.Errorf("invalid pod name %q", spec.Name)
	}
	if spec.Node < 1 || spec.Node > l.opts.Nodes {
		return nil, fmt.Errorf("pod %s: no node %d", spec.Name, spec.Node)
	}
	uid, err := newUID()
	if err != nil {
		return nil, err
	}
	p := &Pod{Name: spec.Name, Namespace: or(spec.Namespace, "default"),
		ServiceAccount: or(spec.ServiceAccount, "default"), UID: uid,
		Node: spec.Node, Enrolled: spec.Enrolled, lab: l, key: spec.Name}
	return p, l.claimPod(p)
}

// claimPod records p under p.key and gives it the next address on its node.
func (l *Lab) claimPod(p *Pod) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab closed")
	}
	if l.pods[p.key] != nil {
		return fmt.Errorf("pod %s exists", p.key)
	}
	k := max(l.nextPod[p.Node], 2)
	if k > maxPodIndex {
		return fmt.Errorf("node %d: no pod addresses left", p.Node)
	}
	l.nextPod[p.Node] = k + 1
	p.index = k
	l.pods[p.key] = p
	return nil
}

// setupPod makes the pod's netns, links, cgroup and config entry.
func (l *Lab) setupPod(ctx context.Context, p *Pod, labels map[string]string) error {
	if err := l.setupPodNetwork(p); err != nil {
		return err
	}
	if err := mkdirCgroup(p.CgroupPath()); err != nil {
		return err
	}
	l.mu.Lock()
	l.cfg.Workloads = append(l.cfg.Workloads, p.workload(labels))
	err := l.saveConfig()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if !l.opts.StartMesh {
		return nil
	}
	if err := l.waitConfigSynced(ctx, p.UID, true); err != nil {
		return err
	}
	if p.Enrolled {
		return l.waitPodListed(ctx, p, true)
	}
	return nil
}

// RemovePod removes the pod from the mesh config (waiting for its node's
// ztunnel to drop it), kills its processes and deletes its netns and cgroup.
func (l *Lab) RemovePod(ctx context.Context, name string) error {
	return l.removePod(ctx, name, true)
}

// removePod is RemovePod; wait says to wait for the ztunnels to drop the pod.
func (l *Lab) removePod(ctx context.Context, name string, wait bool) error {
	l.mu.Lock()
	p := l.pods[name]
	if p == nil {
		l.mu.Unlock()
		return fmt.Errorf("no pod %s", name)
	}
	delete(l.pods, name)
	l.cfg.Workloads = slices.DeleteFunc(l.cfg.Workloads, func(w meshconfig.Workload) bool { return w.UID == p.UID })
	errs := []error{l.saveConfig()}
	l.mu.Unlock()
	if wait && l.opts.StartMesh {
		errs = append(errs, l.waitConfigSynced(ctx, p.UID, false))
		if p.Enrolled && l.Daemon(p.Node, ztunnelKind) != nil {
			errs = append(errs, l.waitPodListed(ctx, p, false))
		}
	}
	errs = append(errs, l.stopPodProcesses(p), removeCgroupTree(ctx, p.CgroupPath()), deleteNetns(p.NetnsName()))
	return errors.Join(errs...)
}

// or returns s, or def when s is empty.
func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
