package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// ZtunnelPods returns the pod uids node i's ztunnel reports as set up
// (admin GET /pods on 127.0.0.1:15000 inside the node netns).
func (l *Lab) ZtunnelPods(ctx context.Context, i int) (map[string]bool, error) {
	var v any
	if err := l.ztunnelPodsJSON(ctx, i, &v); err != nil {
		return nil, err
	}
	uids := map[string]bool{}
	collectUIDs(v, uids)
	return uids, nil
}

// collectUIDs gathers every "uid" string field anywhere in v, so that
// /pods may be a list of objects, an object keyed by uid or {"pods": [...]}.
func collectUIDs(v any, into map[string]bool) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && (k == "uid" || k == "UID") {
				into[s] = true
			}
			if _, ok := x.(map[string]any); ok {
				into[k] = true // keyed by uid
			}
			collectUIDs(x, into)
		}
	case []any:
		for _, x := range t {
			collectUIDs(x, into)
		}
	}
}

// ZtunnelPodStates counts the pods node i's ztunnel lists by state
// (pending, failed, ready).
func (l *Lab) ZtunnelPodStates(ctx context.Context, i int) (map[string]int, error) {
	var pods []struct {
		State string `json:"state"`
	}
	if err := l.ztunnelPodsJSON(ctx, i, &pods); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, p := range pods {
		out[p.State]++
	}
	return out, nil
}

// ztunnelPodsJSON decodes node i's ztunnel's admin GET /pods
// (127.0.0.1:15000 inside the node netns) into v.
func (l *Lab) ztunnelPodsJSON(ctx context.Context, i int, v any) error {
	url := "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mesh.AdminPort).String() + "/pods"
	code, body, err := l.httpGet(ctx, i, url)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("get %s: status %d", url, code)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode /pods: %w", err)
	}
	return nil
}

// waitPodListed waits until p's node ztunnel lists p (want) or no longer
// does (!want).
func (l *Lab) waitPodListed(ctx context.Context, p *Pod, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	var last error
	for {
		uids, err := l.ZtunnelPods(ctx, p.Node)
		if err == nil && uids[p.UID] == want {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return l.daemonError(p.Node, ztunnelKind,
				fmt.Errorf("pod %s (uid %s) listed=%v: %w (last error: %v)", p.Name, p.UID, want, ctx.Err(), last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitPodsListed waits, for ReadyTimeout at most, until every enrolled
// pod of pods is listed by its node's ztunnel.
func (l *Lab) waitPodsListed(ctx context.Context, pods []*Pod) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	want := map[int][]string{}
	for _, p := range pods {
		if p.Enrolled {
			want[p.Node] = append(want[p.Node], p.UID)
		}
	}
	for node, uids := range want {
		var listed int
		var last error
		for {
			got, err := l.ZtunnelPods(ctx, node)
			listed, last = 0, err
			for _, u := range uids {
				if got[u] {
					listed++
				}
			}
			if err == nil && listed == len(uids) {
				break
			}
			select {
			case <-ctx.Done():
				return l.daemonError(node, ztunnelKind,
					fmt.Errorf("%d of %d pods listed: %w (last error: %v)", listed, len(uids), ctx.Err(), last))
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// ztunnelConfig returns the mesh config node i's ztunnel has in force
// (admin GET /config).
func (l *Lab) ztunnelConfig(ctx context.Context, i int) (*meshconfig.Config, error) {
	url := "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mesh.AdminPort).String() + "/config"
	code, body, err := l.httpGet(ctx, i, url)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d", url, code)
	}
	var c meshconfig.Config
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("decode /config: %w", err)
	}
	return &c, nil
}

// waitConfigSynced waits until every running ztunnel has the workload uid
// in force (want) or no longer has it (!want), so that a pod is known
// mesh-wide before AddPod returns.
func (l *Lab) waitConfigSynced(ctx context.Context, uid string, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.ReadyTimeout)
	defer cancel()
	for i := 1; i <= l.opts.Nodes; i++ {
		if err := l.waitNodeConfig(ctx, i, uid, want); err != nil {
			return l.daemonError(i, ztunnelKind, err)
		}
	}
	return nil
}

// waitNodeConfig polls node i's ztunnel config while the ztunnel runs.
func (l *Lab) waitNodeConfig(ctx context.Context, i int, uid string, want bool) error {
	var last error
	for l.Daemon(i, ztunnelKind) != nil {
		c, err := l.ztunnelConfig(ctx, i)
		if err == nil && hasWorkload(c, uid) == want {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("config with workload %s present=%v: %w (last error: %v)", uid, want, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// hasWorkload reports whether c holds the workload uid.
func hasWorkload(c *meshconfig.Config, uid string) bool {
	for _, w := range c.Workloads {
		if w.UID == uid {
			return true
		}
	}
	return false
}

// ZtunnelServices returns the Services node i's ztunnel routes, with
// their endpoints and balancer state (admin GET /debug/services); one
// when service (namespace/name) is set.
func (l *Lab) ZtunnelServices(ctx context.Context, i int, service string) ([]debug.Service, error) {
	u := "http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mesh.AdminPort).String() + debug.ServicesPath
	if service != "" {
		u += "?service=" + url.QueryEscape(service)
	}
	code, body, err := l.httpGet(ctx, i, u)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d: %s", u, code, strings.TrimSpace(string(body)))
	}
	var out []debug.Service
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", debug.ServicesPath, err)
	}
	return out, nil
}
