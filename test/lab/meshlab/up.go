package meshlab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/test/lab"
)

// labFlags are the flags up and demo share.
type labFlags struct {
	binDir       string
	nodes        int
	certLifetime time.Duration
	verbose      bool
	noMesh       bool
	kube         bool
	kubeBinDir   string
}

func (f *labFlags) register(fs *flag.FlagSet, nodes int) {
	fs.StringVar(&f.binDir, "bin-dir", defaultBinDir(), "directory with agentd, ztunnel and meshlab")
	fs.IntVar(&f.nodes, "nodes", nodes, "number of nodes")
	fs.DurationVar(&f.certLifetime, "cert-lifetime", time.Hour, "workload certificate lifetime")
	fs.BoolVar(&f.verbose, "v", false, "log each step")
	fs.BoolVar(&f.kube, "kube", true, "Kubernetes mode (the default): etcd, kube-apiserver, the AgentMesh controller, pods made through the API; --kube=false runs standalone mode (a mesh config file, a local CA)")
	fs.StringVar(&f.kubeBinDir, "kube-bin-dir", "", "Kubernetes mode: directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (default BIN-DIR/kube; `make kube`)")
}

// newLab starts a lab from the flags.
func (f *labFlags) newLab(ctx context.Context) (*lab.Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, cgroups, eBPF): run it with sudo")
	}
	abs, err := filepath.Abs(f.binDir)
	if err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	return lab.New(ctx, lab.Options{Nodes: f.nodes, BinDir: abs, Logger: newLogger(f.verbose),
		CertLifetime: f.certLifetime, StartMesh: !f.noMesh, Kube: f.kube, KubeBinDir: f.kubeBinDir})
}

// runUp is `meshlab up`: start a lab with the demo's agents, print how to
// reach them, wait for Ctrl-C, clean up.
func runUp(ctx context.Context, args []string, stdout io.Writer) (err error) {
	var f labFlags
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	f.register(fs, 2)
	fs.BoolVar(&f.noMesh, "no-mesh", false, "do not start agentd and ztunnel")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	l, err := f.newLab(ctx)
	if err != nil {
		return err
	}
	defer func() { err = closeLab(l, stdout, err) }()
	pods, err := f.startAgents(ctx, l, demoPods(f.nodes))
	if err != nil {
		return err
	}
	printUp(stdout, l, pods)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping...")
	return nil
}

// printUp tells people where things are.
func printUp(w io.Writer, l *lab.Lab, pods map[string]*lab.Pod) {
	fmt.Fprintf(w, "lab %s is up (state, config and logs in %s)\n\n", l.ID(), l.StateDir())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tIPV4\tIPV6\tLOGS")
	for i := 1; i <= l.Nodes(); i++ {
		fmt.Fprintf(tw, "n%d\t%s\t%s\t%s\t%s\n", i, l.NodeNetns(i), l.NodeIPv4(i), l.NodeIPv6(i),
			filepath.Base(l.DaemonLog(i, "ztunnel"))+", "+filepath.Base(l.DaemonLog(i, "agentd")))
	}
	fmt.Fprintln(tw, "\nPOD\tNETNS\tIPV4\tIPV6\tMESH")
	for _, p := range l.Pods() {
		if p.Namespace == lab.MeshNamespace {
			continue
		}
		fmt.Fprintf(tw, "%s (n%d)\t%s\t%s\t%s\t%v\n", p.Name, p.Node, p.NetnsName(), p.IPv4(), p.IPv6(), p.Enrolled)
	}
	tw.Flush()
	if pl, dv := pods["planner"], pods["data-validator"]; pl != nil && dv != nil {
		fmt.Fprintf(w, "\nmake planner call data-validator through the mesh:\n  ip netns exec %s curl -s 'http://127.0.0.1:%d/call?to=http://%s/'\n",
			pl.NetnsName(), agentPort, fmt.Sprintf("%s:%d", dv.IPv4(), agentPort))
	}
	if l.MeshStarted() {
		fmt.Fprintf(w, "ztunnel admin of node 1:\n  ip netns exec %s curl -s http://127.0.0.1:%d/pods\n", l.NodeNetns(1), mesh.AdminPort)
		fmt.Fprintln(w, "a killed agentd, ztunnel or controller comes back by itself, as its DaemonSet or Deployment would")
	}
	if l.HostKubeconfig() != "" {
		printKubectl(w, l)
	}
	fmt.Fprintln(w, "\nCtrl-C stops the lab and removes everything (after a crash: meshlab down)")
}

// printKubectl says how to use kubectl on the lab from this machine.
func printKubectl(w io.Writer, l *lab.Lab) {
	fmt.Fprintf(w, "\nkubectl, from any shell on this machine (the apiserver is forwarded to %s while the lab runs):\n", l.HostAPIServer())
	fmt.Fprintf(w, "  export KUBECONFIG=%s\n", l.HostKubeconfig())
	kubectl := filepath.Join(l.KubeBinDir(), "kubectl")
	if _, err := os.Stat(kubectl); err == nil {
		fmt.Fprintf(w, "  export PATH=%s:$PATH   # the kubectl make kube built\n", l.KubeBinDir())
	}
	fmt.Fprintf(w, "  kubectl get pods -A -o wide\n  kubectl -n agents scale deployment/data-validator --replicas=5\n")
	fmt.Fprintf(w, "pods' /etc/resolv.conf names the cluster DNS %s and %s (Service kube-system/%s); no kube-proxy runs: a Service VIP answers only through the mesh\n",
		lab.ClusterDNSIPv4, lab.ClusterDNSIPv6, lab.ClusterDNSService)
}

// closeLab closes l, reports what was removed and joins the errors.
func closeLab(l *lab.Lab, w io.Writer, err error) error {
	cerr := l.Close()
	left, lerr := lab.Leftovers(l.ID())
	switch {
	case cerr == nil && lerr == nil && len(left) == 0:
		fmt.Fprintf(w, "cleaned up: lab %s (processes, network namespaces, cgroups, bpf pins, state dir): nothing left\n", l.ID())
	default:
		fmt.Fprintf(w, "cleanup of lab %s incomplete, left: %v; run meshlab down\n", l.ID(), left)
	}
	if err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	return lerr
}
