package meshlab

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentmesh/agentmesh/test/lab"
	"github.com/agentmesh/agentmesh/ztunnel/debug"
)

// The Service part of the demo: planner calls data-validator by name.
const (
	byNameURL      = "http://data-validator:8080/" // as an agent writes it: the pod's search path finds agents/data-validator
	byNameCalls    = 30                            // alternating IPv4 and IPv6
	byNameWorkers  = 3                             // calls under way at once, as agents make them
	killCallsEvery = 40 * time.Millisecond
)

// replica is one data-validator pod.
type replica struct {
	pod      *lab.Pod
	calls    [2]int          // over IPv4, IPv6
	dstIDs   map[string]bool // identities planner's ztunnel required of it
	srcIDs   map[string]bool // identities its ztunnel verified of the caller
	mtlsOut  int             // planner's outbound lines to it with mTLS
	notReady time.Duration   // after the kill, until planner's ztunnel stopped choosing it
}

// runServiceDemo has planner call data-validator by name, over both
// families, and shows how the calls spread over the replicas and what
// each side's ztunnel verified; then it kills one replica's app while
// planner keeps calling, and shows that no call failed.
func runServiceDemo(ctx context.Context, l *lab.Lab, pods map[string]*lab.Pod, w io.Writer) error {
	planner := pods["planner"]
	reps, err := replicas3(ctx, l)
	if err != nil {
		return err
	}
	if err := waitReplicasReady(ctx, l, planner, reps); err != nil {
		return err
	}
	fmt.Fprintf(w, "\ncalling by name: planner -> %s, %d times over IPv4 and IPv6, %d at a time\n", byNameURL, byNameCalls, byNameWorkers)
	fmt.Fprintf(w, "(the mesh's DNS answers data-validator with the Service's ClusterIPs; planner's ztunnel picks a replica per\n")
	fmt.Fprintf(w, "connection: of two at random, the one with the lower connect latency times open connections)\n\n")
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, byNameWorkers)
	for k := range byNameWorkers {
		wg.Go(func() {
			for i := range byNameCalls / byNameWorkers {
				fam := i % 2
				rep, err := callByName(ctx, planner, reps, []string{"tcp4", "tcp6"}[fam])
				if err != nil {
					errs[k] = err
					return
				}
				mu.Lock()
				rep.calls[fam]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := readServiceLogs(l, planner, reps, start); err != nil {
		return err
	}
	printReplicas(w, reps)

	victim := slices.MaxFunc(reps, func(a, b *replica) int { return cmp.Compare(a.calls[0]+a.calls[1], b.calls[0]+b.calls[1]) })
	fmt.Fprintf(w, "\nkilling %s's app (SIGKILL, between two calls) while planner calls data-validator by name every %s...\n", victim.pod.Name, killCallsEvery)
	ok, failed, failovers, err := callThroughKill(ctx, l, planner, reps, victim)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d calls, %d failed; connections that found the dead replica first and were failed over to another by ztunnel: %d\n", ok+len(failed), len(failed), failovers)
	fmt.Fprintf(w, "planner's ztunnel stopped choosing %s %s after the kill (its readiness reached the node)\n",
		victim.pod.Name, victim.notReady.Round(time.Millisecond))
	if len(failed) > 0 {
		for _, f := range failed {
			fmt.Fprintln(w, "  failed:", f)
		}
		if lines, err := lab.LogLines(l.DaemonLog(planner.Node, "ztunnel"), "connection to service refused"); err == nil {
			for _, ll := range lines {
				fmt.Fprintf(w, "  planner's ztunnel: %v\n", ll)
			}
		}
		return fmt.Errorf("%d calls failed while a replica was killed", len(failed))
	}
	return nil
}

// replicas3 returns data-validator's pods, sorted by name.
func replicas3(ctx context.Context, l *lab.Lab) ([]*replica, error) {
	list, err := l.Client().CoreV1().Pods("agents").List(ctx, metav1.ListOptions{LabelSelector: "app=data-validator"})
	if err != nil {
		return nil, fmt.Errorf("list data-validator pods: %w", err)
	}
	var out []*replica
	for _, p := range list.Items {
		lp := l.KubePod(p.Namespace, p.Name)
		if lp == nil {
			return nil, fmt.Errorf("pod %s has no sandbox", p.Name)
		}
		out = append(out, &replica{pod: lp, dstIDs: map[string]bool{}, srcIDs: map[string]bool{}})
	}
	slices.SortFunc(out, func(a, b *replica) int { return cmp.Compare(a.pod.Name, b.pod.Name) })
	if len(out) < 2 {
		return nil, fmt.Errorf("data-validator has %d pods, want several", len(out))
	}
	return out, nil
}

// callByName asks planner's agent to call byNameURL over network and
// returns the replica that answered.
func callByName(ctx context.Context, planner *lab.Pod, reps []*replica, network string) (*replica, error) {
	u := fmt.Sprintf("http://127.0.0.1:%d/call?net=%s&to=%s", agentPort, network, url.QueryEscape(byNameURL))
	_, body, err := planner.HTTPGet(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("ask planner to call %s: %w", byNameURL, err)
	}
	var res CallResult
	var reply AgentReply
	if err := json.Unmarshal(body, &res); err != nil || res.Error != "" || json.Unmarshal(res.Reply, &reply) != nil {
		return nil, fmt.Errorf("planner -> %s over %s failed: %s", byNameURL, network, cmp.Or(res.Error, string(body)))
	}
	local, err := netip.ParseAddrPort(reply.Local)
	if err != nil {
		return nil, fmt.Errorf("reply %s: local address: %w", res.Reply, err)
	}
	for _, r := range reps {
		if r.pod.IPv4() == local.Addr().Unmap() || r.pod.IPv6() == local.Addr() {
			return r, nil
		}
	}
	return nil, fmt.Errorf("the call was answered on %s, no data-validator pod's address", local)
}

// readServiceLogs reads what both ends' ztunnels logged of the calls made
// since start.
func readServiceLogs(l *lab.Lab, planner *lab.Pod, reps []*replica, start time.Time) error {
	// A line is written when its connection has ended: wait for all.
	var out []lab.AccessLog
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if out, err = l.AccessLogs(planner.Node); err != nil {
			return err
		}
		n := 0
		for _, a := range out {
			if a.Direction == "outbound" && a.DstService == "agents/data-validator" && !a.Time.Before(start) {
				n++
			}
		}
		if n >= byNameCalls || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, a := range out {
		if a.Direction != "outbound" || a.DstService != "agents/data-validator" || a.Time.Before(start) {
			continue
		}
		for _, r := range reps {
			if up := a.Upstream().Addr(); up == r.pod.IPv4() || up == r.pod.IPv6() {
				r.dstIDs[a.DstIdentity] = true
				if a.MTLS || a.Protocol == "local" {
					r.mtlsOut++
				}
			}
		}
	}
	for _, r := range reps {
		in, err := l.AccessLogs(r.pod.Node)
		if err != nil {
			return err
		}
		for _, a := range in {
			dst := a.Dst().Addr().Unmap()
			if a.Direction == "inbound" && (a.MTLS || a.Protocol == "local") && !a.Time.Before(start) && (dst == r.pod.IPv4() || dst == r.pod.IPv6()) &&
				(a.Src().Addr().Unmap() == planner.IPv4() || a.Src().Addr() == planner.IPv6()) {
				r.srcIDs[a.SrcIdentity] = true
			}
		}
	}
	return nil
}

func printReplicas(w io.Writer, reps []*replica) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tNODE\tCALLS V4/V6\tMTLS OR LOCAL\tCALLER'S ZTUNNEL SAW\tCALLEE'S ZTUNNEL SAW")
	for _, r := range reps {
		n := r.calls[0] + r.calls[1]
		fmt.Fprintf(tw, "%s\tn%d\t%d/%d\t%s\t%s\t%s\n", r.pod.Name, r.pod.Node, r.calls[0], r.calls[1],
			fmt.Sprintf("%d of %d", min(r.mtlsOut, n), n), keys(r.dstIDs), keys(r.srcIDs))
	}
	tw.Flush()
}

func keys(m map[string]bool) string {
	if len(m) == 0 {
		return "-"
	}
	return strings.Join(slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}), ",")
}

// callThroughKill has planner call by name every killCallsEvery, kills
// victim's app once calls flow, and goes on until planner's ztunnel no
// longer counts the victim as ready and a second more has passed. It
// returns the calls that worked and those that failed, and how many
// connections ztunnel failed over.
func callThroughKill(ctx context.Context, l *lab.Lab, planner *lab.Pod, reps []*replica, victim *replica) (ok int, failed []string, failovers int, err error) {
	cctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	// inCall is held during each call: the kill takes it, so it lands
	// between two calls. A call in flight on the killed app would be cut
	// mid-request, which no connect failover can save (an L7 retry
	// could); this part shows the connections that come after.
	var inCall sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(killCallsEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			inCall.Lock()
			_, err := callByName(cctx, planner, reps, []string{"tcp4", "tcp6"}[i%2])
			inCall.Unlock()
			if cctx.Err() != nil {
				return
			}
			mu.Lock()
			if err != nil {
				failed = append(failed, err.Error())
			} else {
				ok++
			}
			mu.Unlock()
		}
	}()
	stop := func() (int, []string) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return ok, failed
	}
	time.Sleep(10 * killCallsEvery) // calls flow before the kill
	inCall.Lock()
	killed := time.Now()
	err = killAppOf(ctx, l, victim.pod)
	inCall.Unlock()
	if err != nil {
		stop()
		return 0, nil, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := l.ZtunnelServices(ctx, planner.Node, "agents/data-validator")
		if err == nil && !readyIn(svcs[0].Endpoints, victim.pod) {
			victim.notReady = time.Since(killed)
			break
		}
		if time.Now().After(deadline) {
			stop()
			return 0, nil, 0, fmt.Errorf("%s still ready in planner's ztunnel 30s after its app was killed", victim.pod.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	ok, failed = stop()
	logs, err := l.AccessLogs(planner.Node)
	if err != nil {
		return ok, failed, 0, err
	}
	for _, a := range logs {
		if a.DstService == "agents/data-validator" && !a.Time.Before(killed) && a.Attempts > 1 {
			failovers++
		}
	}
	return ok, failed, failovers, nil
}

// waitReplicasReady waits until planner's ztunnel has every replica as a
// ready endpoint of the Service (the EndpointSlices reach the node a
// moment after the pods answer).
func waitReplicasReady(ctx context.Context, l *lab.Lab, planner *lab.Pod, reps []*replica) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := l.ZtunnelServices(ctx, planner.Node, "agents/data-validator")
		if err == nil && !slices.ContainsFunc(reps, func(r *replica) bool { return !readyIn(svcs[0].Endpoints, r.pod) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("planner's ztunnel does not have every data-validator replica ready after 30s (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyIn reports whether p is a ready endpoint among eps.
func readyIn(eps []debug.Endpoint, p *lab.Pod) bool {
	for _, e := range eps {
		if e.Workload == p.Namespace+"/"+p.Name && e.Ready {
			return true
		}
	}
	return false
}

// killAppOf kills p's app by the PID its container status names and
// waits until it has exited: the kubelet restarts it, and the pod is not
// ready until then.
func killAppOf(ctx context.Context, l *lab.Lab, p *lab.Pod) error {
	pod, err := l.Client().CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", p.Name, err)
	}
	if len(pod.Status.ContainerStatuses) == 0 {
		return fmt.Errorf("pod %s has no container status", p.Name)
	}
	var pid int
	if _, err := fmt.Sscanf(pod.Status.ContainerStatuses[0].ContainerID, "amlab://%d", &pid); err != nil || pid <= 1 {
		return fmt.Errorf("pod %s: container id %q names no pid", p.Name, pod.Status.ContainerStatuses[0].ContainerID)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s's app (pid %d): %w", p.Name, pid, err)
	}
	// Until it has exited, a connect may still reach it and be cut as it
	// dies: that is a call in flight, not one made after the kill.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lab.WaitExited(wctx, pid)
}
