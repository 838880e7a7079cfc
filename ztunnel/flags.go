package ztunnel

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/logging"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
	"github.com/agentmesh/agentmesh/ztunnel/dnsproxy"
	"github.com/agentmesh/agentmesh/ztunnel/record"
	"github.com/agentmesh/agentmesh/ztunnel/transport"
)

// options are ztunnel's command-line flags.
type options struct {
	mode         configsource.Flags // --node, and --config or --controller with its connection flags
	pinDir       string
	agentdSocket string
	// Standalone mode: the local CA. In Kubernetes mode config, trust
	// bundle and certificates come from the controller.
	caCert, caKey string

	certLifetime     time.Duration
	adminAddr        string
	metricsAddr      string
	readyAddr        string
	maxConns         int
	sameNodeFastPath bool
	callerAddress    bool
	procSysNet       string
	// handoverWait and drainTimeout: see their flags (upgrades).
	handoverWait, drainTimeout time.Duration
	httpPerRequest             bool
	otlpEndpoint               string
	traceSampling              float64
	recentRequests             int
	detect                     detect.Options
	failover                   transport.Failover
	// clusterDomain is the Services' DNS domain the DNS proxy answers.
	clusterDomain string
	// cpuProfile and allocProfile: files for a CPU profile of the whole
	// run and an allocation profile at exit (benchmarks).
	cpuProfile, allocProfile string
	log                      logging.Flags
}

// parseFlags parses args; it returns flag.ErrHelp after printing usage.
func parseFlags(args []string, usage io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.SetOutput(usage)
	o.mode.Register(fs, configsource.Component{
		Standalone: []configsource.StringFlag{
			{Name: "ca-cert", Usage: "standalone mode: local CA certificate (PEM)", Value: &o.caCert},
			{Name: "ca-key", Usage: "standalone mode: local CA private key (PEM)", Value: &o.caKey},
		},
		FromController: "config and certificates",
	})
	fs.StringVar(&o.pinDir, "pin-dir", mesh.DefaultPinDir, "bpffs directory where agentd pins the maps")
	fs.StringVar(&o.agentdSocket, "agentd-socket", mesh.DefaultAgentdSocket, "agentd hand-off unix socket")
	fs.DurationVar(&o.certLifetime, "cert-lifetime", 24*time.Hour, "standalone mode: lifetime of workload certificates (the controller decides in Kubernetes mode)")
	fs.StringVar(&o.adminAddr, "admin-addr", fmt.Sprintf("127.0.0.1:%d", mesh.AdminPort), "admin API address (keep it on localhost)")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (go tool pprof; for benchmarks)")
	fs.StringVar(&o.allocProfile, "alloc-profile", "", "write an allocation profile to this file at exit (go tool pprof; for benchmarks)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", fmt.Sprintf(":%d", mesh.MetricsPort), "Prometheus metrics address")
	fs.StringVar(&o.readyAddr, "ready-addr", fmt.Sprintf(":%d", mesh.ReadinessPort), "readiness probe address")
	fs.IntVar(&o.maxConns, "max-connections", 0, "proxied connections (outbound and plaintext connections, inbound HBONE streams) carried at once; more are refused at once with a reset (0: only the fd budget, the open-file limit less a reserve, bounds them)")
	d := transport.DefaultFailover
	fs.IntVar(&o.failover.Attempts, "service-connect-attempts", d.Attempts, "connects a connection to a Service VIP may make, on different endpoints, before the app's connection is reset (the first included)")
	fs.DurationVar(&o.failover.Timeout, "service-connect-timeout", d.Timeout, "bound of one connect to a Service endpoint")
	fs.DurationVar(&o.failover.Budget, "service-connect-budget", d.Budget, "bound of all connects and backoffs of one connection to a Service VIP")
	fs.DurationVar(&o.failover.BackoffBase, "service-connect-backoff", d.BackoffBase, "first backoff before a failed Service connect is retried (full jitter, doubling)")
	fs.DurationVar(&o.failover.BackoffMax, "service-connect-backoff-max", d.BackoffMax, "largest backoff between Service connect attempts")
	fs.BoolVar(&o.sameNodeFastPath, "same-node-fast-path", true, "join connections between two pods of this node inside the tunnel, without TLS and HTTP/2 (policy and telemetry as over HBONE; the access log says protocol local); false: they go over HBONE like cross-node traffic")
	fs.StringVar(&o.procSysNet, "proc-sys-net", "/proc/sys/net", "where this process sees /proc/sys/net read-write, to set a pod's per-netns sysctls (tcp_tw_reuse, tcp_fwmark_accept) from inside its netns; in a container, whose /proc/sys is read-only, a hostPath of the node's /proc/sys/net mounted elsewhere")
	fs.DurationVar(&o.handoverWait, "handover-wait", 0, "on SIGTERM, how long to keep serving while waiting for a successor ztunnel to take the pods over (an upgrade that started the next ztunnel beside this one) before shutting down without one; 0: shut down at once")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 20*time.Second, "after the pods were handed over to a successor, how long the connections this ztunnel still proxies may run once SIGTERM came; those still open then are closed")
	fs.BoolVar(&o.callerAddress, "caller-address", true, "deliver inbound connections to the app from the caller's address (IP_TRANSPARENT in the pod netns), so that apps see their real peer; needs agentd's deliveries map; false: from the pod's own address")
	fs.BoolVar(&o.httpPerRequest, "http-per-request", false, "proxy outbound HTTP flows (HTTP/1.x, HTTP/2, gRPC, A2A, MCP, declared or sniffed) request by request: each request is balanced on its own over the Service's endpoints and gets its access line and agentmesh_requests_total; false: they are copied as opaque bytes like TCP")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "host:port of an OpenTelemetry collector (OTLP/gRPC, plaintext) that gets a span per request proxied per request; empty: no tracing")
	fs.Float64Var(&o.traceSampling, "trace-sampling", 0.01, "share of the traces ztunnel starts that are sampled (0..1); a request whose traceparent says sampled is traced whatever this says")
	fs.IntVar(&o.recentRequests, "recent-requests", record.DefaultRecentRequests, "how many of the last requests proxied per request the node keeps for the admin API's /debug/requests (meshctl requests), in a ring of that fixed size; 0 keeps none")
	fs.DurationVar(&o.detect.Timeout, "protocol-detect-timeout", time.Second, "how long an outbound connection to a mesh destination whose port declares no appProtocol waits for the app's first bytes to tell HTTP/1.x and HTTP/2 from opaque TCP (nothing is consumed); a client that sends nothing in time is opaque; 0 turns sniffing off")
	o.detect.OpaquePorts = slices.Clone(detect.DefaultOpaquePorts)
	fs.Func("opaque-ports", fmt.Sprintf("comma-separated destination ports never sniffed (opaque unless their Service port declares an appProtocol): server-first protocols, whose clients wait for the server (default %s; \"\" for none)", portList(detect.DefaultOpaquePorts)), func(v string) error {
		ports, err := parsePorts(v)
		o.detect.OpaquePorts = ports
		return err
	})
	fs.StringVar(&o.clusterDomain, "cluster-domain", dnsproxy.DefaultClusterDomain, "the cluster's DNS domain: the DNS proxy answers svc.ns.svc.<domain> (and svc, svc.ns, svc.ns.svc) from the mesh config")
	o.log.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := o.mode.Check(); err != nil {
		return nil, err
	}
	if o.maxConns < 0 {
		return nil, errors.New("--max-connections must not be negative")
	}
	if err := o.failover.Validate(); err != nil {
		return nil, fmt.Errorf("--service-connect-*: %w", err)
	}
	if dnsproxy.NormalizeDomain(o.clusterDomain) == "" {
		return nil, errors.New("--cluster-domain must not be empty")
	}
	if o.traceSampling < 0 || o.traceSampling > 1 {
		return nil, fmt.Errorf("--trace-sampling %v: want 0..1", o.traceSampling)
	}
	if o.recentRequests < 0 {
		return nil, errors.New("--recent-requests must not be negative")
	}
	if o.detect.Timeout < 0 {
		return nil, errors.New("--protocol-detect-timeout must not be negative")
	}
	if o.certLifetime <= 0 {
		return nil, errors.New("--cert-lifetime must be positive")
	}
	return o, nil
}

// parsePorts reads a comma-separated list of ports.
func parsePorts(v string) ([]uint16, error) {
	var out []uint16
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("port %q: want 1-65535", f)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

// portList is ports comma-separated.
func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}
