package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// pathWait bounds the wait for ztunnel's access log lines, which are
// written when a proxied connection closes.
const pathWait = 5 * time.Second

// passthrough is the access log protocol of a connection ztunnel forwarded
// without the mesh (destination not known as an enrolled workload).
const passthrough = "passthrough"

// checkPath makes sure traffic went the way the scenario's name says. For
// a direct scenario no ztunnel may have proxied anything to dsts. For a
// mesh scenario the client node's ztunnel must have logged at least want
// outbound connections to dsts since the given time, none of them
// passthrough. It returns how the traffic went: "direct", or the protocols
// of those connections ("hbone+mtls", ...).
func checkPath(ctx context.Context, l *lab.Lab, sc Scenario, since time.Time, want int, dsts ...netip.AddrPort) (string, error) {
	if !sc.Mesh {
		return "direct", checkNotProxied(l, dsts)
	}
	ctx, cancel := context.WithTimeout(ctx, pathWait)
	defer cancel()
	for {
		logs, err := l.AccessLogs(sc.ClientNode)
		if err != nil {
			return "", err
		}
		if got := findAccess(logs, since, dsts); len(got) >= want {
			path := describePaths(got)
			if strings.Contains(path, passthrough) {
				return path, fmt.Errorf("ztunnel on node %d passed traffic through without the mesh (%s)", sc.ClientNode, path)
			}
			return path, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("ztunnel on node %d logged fewer than %d connections to %v: traffic was not proxied", sc.ClientNode, want, dsts)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkNotProxied fails if any node's ztunnel logged a connection to dsts.
func checkNotProxied(l *lab.Lab, dsts []netip.AddrPort) error {
	if !l.MeshStarted() {
		return nil
	}
	for node := 1; node <= l.Nodes(); node++ {
		logs, err := l.AccessLogs(node)
		if err != nil {
			return err
		}
		if got := findAccess(logs, time.Time{}, dsts); len(got) > 0 {
			return fmt.Errorf("direct traffic went through ztunnel on node %d: %+v", node, got[0])
		}
	}
	return nil
}

// findAccess returns the outbound access log lines to one of dsts logged
// at or after since.
func findAccess(logs []lab.AccessLog, since time.Time, dsts []netip.AddrPort) []lab.AccessLog {
	var out []lab.AccessLog
	for _, a := range logs {
		if a.Direction == "outbound" && !a.Time.Before(since) && slices.Contains(dsts, a.Dst()) {
			out = append(out, a)
		}
	}
	return out
}

// describePaths names the distinct ways the lines say traffic went, sorted
// and joined by ",".
func describePaths(logs []lab.AccessLog) string {
	var paths []string
	for _, a := range logs {
		p := a.Protocol
		if a.MTLS {
			p += "+mtls"
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return strings.Join(slices.Compact(paths), ",")
}
