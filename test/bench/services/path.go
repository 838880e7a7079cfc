package services

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// logWait bounds the wait for n1's access lines, written when ztunnel
// closes a proxied connection.
const logWait = 15 * time.Second

// checkPath makes sure the row's traffic went the way its kind says and
// returns how it went. Direct: no ztunnel logged a connection to target.
// Mesh: n1's ztunnel logged at least want outbound connections to target
// since the measurement began, all over mTLS and none passthrough; a VIP
// row's name the Service and go to the server pod, and the balancer counted
// at least want picks of it since picksBefore.
func checkPath(ctx context.Context, l *lab.Lab, s *setup, k Kind, target netip.AddrPort, since time.Time, want int, picksBefore uint64) (string, error) {
	if k == Direct {
		return "direct", checkUntouched(l, target)
	}
	lines, err := waitOutbound(ctx, l, target, since, want)
	if err != nil {
		return "", err
	}
	upstream := netip.AddrPortFrom(s.meshServer.IPv4(), echoPort)
	for _, a := range lines {
		switch {
		case !a.MTLS || a.Protocol == "passthrough":
			return "", fmt.Errorf("n1's ztunnel carried a connection to %s as %s, mtls %v", target, a.Protocol, a.MTLS)
		case k == PodIP && a.DstService != "":
			return "", fmt.Errorf("a connection to pod address %s was logged for service %q", target, a.DstService)
		case k == VIP && (a.DstService != servicesKey || a.Upstream() != upstream):
			return "", fmt.Errorf("a connection to %s was logged for service %q to %s, want %s to %s", target, a.DstService, a.UpstreamAddr, servicesKey, upstream)
		}
	}
	path := describe(lines)
	if k != VIP {
		return path, nil
	}
	picks, err := endpointPicks(ctx, l, k)
	if err != nil {
		return path, err
	}
	if n := picks - picksBefore; n < uint64(want) {
		return path, fmt.Errorf("n1's balancer picked the endpoint %d times for %d connections", n, want)
	}
	return path + " via svc", nil
}

// checkUntouched fails if any node's ztunnel logged a connection to
// target, kubelet probes aside (they are not the benchmark's traffic).
func checkUntouched(l *lab.Lab, target netip.AddrPort) error {
	for node := 1; node <= l.Nodes(); node++ {
		logs, err := l.AccessLogs(node)
		if err != nil {
			return err
		}
		for _, a := range logs {
			if a.Dst() == target && a.Authz != "kubelet-probe" {
				return fmt.Errorf("direct traffic went through ztunnel on n%d: %+v", node, a)
			}
		}
	}
	return nil
}

// waitOutbound waits until n1's ztunnel logged at least want outbound
// connections to target at or after since and returns them.
func waitOutbound(ctx context.Context, l *lab.Lab, target netip.AddrPort, since time.Time, want int) ([]lab.AccessLog, error) {
	ctx, cancel := context.WithTimeout(ctx, logWait)
	defer cancel()
	var got []lab.AccessLog
	for {
		logs, err := l.AccessLogs(1)
		if err != nil {
			return nil, err
		}
		got = slices.DeleteFunc(logs, func(a lab.AccessLog) bool {
			return a.Direction != "outbound" || a.Dst() != target || a.Time.Before(since)
		})
		if len(got) >= want {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("n1's ztunnel logged %d connections to %s, want at least %d: traffic not proxied", len(got), target, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// endpointPicks is how often n1's balancer chose the Service's endpoint
// so far; 0 for the rows that do not use the Service.
func endpointPicks(ctx context.Context, l *lab.Lab, k Kind) (uint64, error) {
	if k != VIP {
		return 0, nil
	}
	svcs, err := l.ZtunnelServices(ctx, 1, servicesKey)
	if err != nil {
		return 0, fmt.Errorf("n1's services: %w", err)
	}
	if len(svcs) != 1 || len(svcs[0].Endpoints) != 1 {
		return 0, fmt.Errorf("n1's ztunnel has %+v for %s, want one endpoint", svcs, servicesKey)
	}
	return svcs[0].Endpoints[0].Picks, nil
}

// describe names the distinct ways the lines say traffic went, sorted and
// joined by ",": "hbone+mtls".
func describe(lines []lab.AccessLog) string {
	var paths []string
	for _, a := range lines {
		p := a.Protocol
		if a.MTLS {
			p += "+mtls"
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return strings.Join(slices.Compact(paths), ",")
}
