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
	realNodes    int
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
	o := lab.Options{Nodes: f.nodes + f.realNodes, RealNodes: f.realNodes, BinDir: abs, Logger: newLogger(f.verbose),
		CertLifetime: f.certLifetime, StartMesh: !f.noMesh && f.nodes > 0, Kube: f.kube, KubeBinDir: f.kubeBinDir}
	if f.realNodes > 0 {
		// make image's tarball, for helm install on the real nodes.
		o.RealNodeImages, _ = filepath.Glob(filepath.Join(abs, "image", "agentmesh-*.tar"))
	}
	return lab.New(ctx, o)
}

// runUp is `meshlab up`: start a lab with the demo's agents, print how to
// reach them, wait for Ctrl-C, clean up.
func runUp(ctx context.Context, args []string, stdout io.Writer) (err error) {
	var f labFlags
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	f.register(fs, 2)
	fs.BoolVar(&f.noMesh, "no-mesh", false, "do not start agentd and ztunnel")
	fs.IntVar(&f.realNodes, "real-nodes", 0, "Kubernetes mode: this many real nodes after the --nodes fake ones (kubelet, containerd, runc, CNI bridge, kube-proxy; built by make kube containerd coredns lab-image, and make image helm to install the chart there); the lab runs no mesh of its own on them, and the demo's agents keep off them")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if f.nodes < 0 || f.realNodes < 0 || f.nodes+f.realNodes < 1 || (f.realNodes > 0 && !f.kube) {
		return fmt.Errorf("%w: want --nodes >= 0 and --real-nodes >= 0, at least one node, and --kube with real nodes", ErrUsage)
	}
	l, err := f.newLab(ctx)
	if err != nil {
		return err
	}
	defer func() { err = closeLab(l, stdout, err) }()
	pods := map[string]*lab.Pod{}
	if f.nodes > 0 {
		// The demo's agents, on the fake nodes.
		if pods, err = f.startAgents(ctx, l, demoPods(f.nodes)); err != nil {
			return err
		}
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
	printRealNodes(w, l)
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
	fmt.Fprintf(w, "pods' /etc/resolv.conf names the cluster DNS %s and %s (Service kube-system/%s); on the lab's fake nodes no kube-proxy runs: a Service VIP answers only through the mesh\n",
		lab.ClusterDNSIPv4, lab.ClusterDNSIPv6, lab.ClusterDNSService)
}

// printRealNodes says how to install the chart on the real nodes.
func printRealNodes(w io.Writer, l *lab.Lab) {
	var real []int
	for i := 1; i <= l.Nodes(); i++ {
		if l.RealNodeBPFFS(i) != "" {
			real = append(real, i)
		}
	}
	if len(real) == 0 {
		return
	}
	fmt.Fprintf(w, "\nreal nodes (kubelet, containerd, kube-proxy; CoreDNS behind kube-dns): %v; their files, pod logs among them, are in %s/n<i>-real\n", real, l.StateDir())
	if len(real) != 1 || l.MeshStarted() {
		fmt.Fprintln(w, "the chart installs on a lab of one real node and no fake ones: meshlab up --nodes 0 --real-nodes 1")
		return
	}
	i := real[0]
	fmt.Fprintf(w, "install the chart there (make image helm; the image is imported, not pulled):\n"+
		"  bin/helm install agentmesh deploy/charts/agentmesh -n agentmesh-system --create-namespace --kubeconfig %s \\\n"+
		"    --set image.pullPolicy=Never --set node.hostPaths.bpffs=%s --set node.hostPaths.cgroupRoot=%s \\\n"+
		"    --set node.hostPaths.run=%s --set node.cni.binDir=%s --set node.cni.confDir=%s --wait\n",
		l.HostKubeconfig(), l.RealNodeBPFFS(i), l.RealNodeCgroup(i), l.RealNodeRunDir(i), l.RealNodeCNIBinDir(i), l.RealNodeCNIConfDir(i))
	fmt.Fprintf(w, "pods run the lab's image %s (meshlab app ...) with imagePullPolicy Never\n", lab.LabImage)
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
