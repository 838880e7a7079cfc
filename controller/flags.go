package controller

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/internal/logging"
)

// options are the controller's flags.
type options struct {
	kubeconfig   string
	namespace    string
	listen       string
	servingNames []string
	trustDomain  string
	nodeSAs      []string
	audiences    []string
	certLifetime time.Duration
	caSecret     string
	// caPropagation and caRotateBefore time root rotations (ca.Timing).
	caPropagation  time.Duration
	caRotateBefore time.Duration
	metricsAddr    string
	leaderElect    bool
	leaseName      string
	identity       string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	debounce       time.Duration
	kubeQPS        float64
	kubeBurst      int
	cpuProfile     string
	allocProfile   string
	log            logging.Flags
}

func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.StringVar(&o.namespace, "namespace", "agentmesh-system", "namespace of the controller, its CA secret, root configmap and lease")
	fs.StringVar(&o.listen, "listen", ":15012", "gRPC (TLS) listen address of the config stream and CA")
	names := fs.String("serving-names", "agentmesh-controller.agentmesh-system.svc,localhost,127.0.0.1", "comma-separated DNS names and IPs of the serving certificate")
	fs.StringVar(&o.trustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain")
	sas := fs.String("node-service-accounts", "agentmesh-system/agentmesh-node", "comma-separated namespace/name of the service accounts node components run as")
	auds := fs.String("token-audience", "agentmesh", "comma-separated audiences the node tokens must carry")
	fs.DurationVar(&o.certLifetime, "cert-lifetime", 24*time.Hour, "lifetime of workload certificates")
	fs.StringVar(&o.caSecret, "ca-secret", "agentmesh-ca", "name of the Secret holding the CA root (in --namespace)")
	fs.DurationVar(&o.caPropagation, "ca-propagation", 10*time.Minute, "root rotation: how long a new root is trusted before it signs, and how long the old one stays trusted after its last workload certificate expired (start a rotation with the Secret annotation "+ca.AnnotationRotate+")")
	fs.DurationVar(&o.caRotateBefore, "ca-rotate-before", 365*24*time.Hour, "start a root rotation on its own when the root expires within this (0: only when asked)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", ":15014", "HTTP address of /metrics, /status and /readyz (empty: off)")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader with a Lease; only the leader publishes the root configmap")
	fs.StringVar(&o.leaseName, "lease-name", "agentmesh-controller", "name of the leader election Lease")
	fs.StringVar(&o.identity, "id", host, "this replica's identity in leader election")
	fs.DurationVar(&o.leaseDuration, "lease-duration", 15*time.Second, "leader election lease duration")
	fs.DurationVar(&o.renewDeadline, "renew-deadline", 10*time.Second, "leader election renew deadline")
	fs.DurationVar(&o.retryPeriod, "retry-period", 2*time.Second, "leader election retry period")
	fs.DurationVar(&o.debounce, "debounce", 100*time.Millisecond, "batching of changes: a change after this long without one goes to the nodes at once; the changes that follow within it are gathered until it passes without one (at most 1s)")
	fs.Float64Var(&o.kubeQPS, "kube-api-qps", 80, "requests per second to the Kubernetes API (client-side limit); TokenReviews of connecting nodes have a limiter of their own of this rate")
	fs.IntVar(&o.kubeBurst, "kube-api-burst", 160, "burst of requests to the Kubernetes API above --kube-api-qps (also for TokenReviews, separately)")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (go tool pprof; for benchmarks)")
	fs.StringVar(&o.allocProfile, "alloc-profile", "", "write an allocation profile to this file at exit (go tool pprof; for benchmarks)")
	o.log.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.servingNames, o.nodeSAs, o.audiences = splitList(*names), splitList(*sas), splitList(*auds)
	return o, o.check()
}

func (o *options) check() error {
	switch {
	case o.namespace == "" || o.caSecret == "" || o.trustDomain == "":
		return fmt.Errorf("--namespace, --ca-secret and --trust-domain must not be empty")
	case len(o.nodeSAs) == 0:
		return fmt.Errorf("--node-service-accounts must name at least one service account")
	case o.kubeQPS <= 0 || o.kubeBurst < 1:
		return fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive")
	case o.caPropagation <= 0 || o.caRotateBefore < 0:
		return fmt.Errorf("--ca-propagation must be positive and --ca-rotate-before not negative")
	case o.certLifetime < time.Minute:
		return fmt.Errorf("--cert-lifetime %s is too short", o.certLifetime)
	case o.leaderElect && o.identity == "":
		return fmt.Errorf("--id is required with --leader-elect")
	case o.leaderElect && (o.leaseDuration <= o.renewDeadline || float64(o.renewDeadline) <= 1.2*float64(o.retryPeriod)):
		return fmt.Errorf("want --lease-duration > --renew-deadline > 1.2 x --retry-period")
	}
	for _, sa := range o.nodeSAs {
		if ns, name, ok := strings.Cut(sa, "/"); !ok || ns == "" || name == "" {
			return fmt.Errorf("--node-service-accounts: %q is not namespace/name", sa)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
