package ztunnel

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/handoff"
	"github.com/agentmesh/agentmesh/internal/profile"
	"github.com/agentmesh/agentmesh/ztunnel/identity"
	"github.com/agentmesh/agentmesh/ztunnel/nodeaddr"
	"github.com/agentmesh/agentmesh/ztunnel/podnet"
	"github.com/agentmesh/agentmesh/ztunnel/relay"
)

// shutdownBudget bounds the whole shutdown of Run.
const shutdownBudget = 15 * time.Second

// Run is the ztunnel process: it parses args, serves until ctx is done and
// returns after everything it started has stopped (bounded by a budget).
// Logs go to stderr; usage goes to stdout.
//
// Two modes (internal/configsource and source): standalone (--config
// file, local CA from --ca-cert/--ca-key) and Kubernetes (--controller:
// config and trust bundle from the controller's stream, certificates from
// its CA). Both feed the same Node.SetConfig. In Kubernetes mode readiness
// also waits for the first config, and while the controller is away
// ztunnel keeps serving with the last config and its current
// certificates. A pod agentd takes away while the config lists it as opted
// out (not enrolled, still on this node) is drained, not removed: see
// drainingNode.
//
// Start order: HTTP servers (admin, metrics, readiness; not ready yet),
// certificate manager, pinned maps (waits for agentd), the node's own
// addresses (listed, then watched: the kubelet's probes come from them),
// node, config source (file watcher or controller stream), agentd
// hand-off. Shutdown order is the reverse, each step finished before the
// next:
//  1. hand-off: no pods are added or removed any more;
//  2. config source;
//  3. node: SOCKHASH entries deleted (the kernel refuses new inbound
//     connections, failing closed), listeners closed, live connections
//     closed (those of draining pods too), netns fds closed, HBONE client
//     and server closed; then the drained pods are released; then the
//     node address watcher;
//  4. certificate manager (nothing asks for certificates any more), then
//     the controller connection;
//  5. HTTP servers (readiness answered 503 until here);
//  6. pinned maps closed.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := o.log.Logger(os.Stderr).With("node", o.mode.Node)
	stopProfile, err := profile.Start(o.cpuProfile, o.allocProfile)
	if err != nil {
		return err
	}
	return errors.Join(run(ctx, o, log), stopProfile())
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	src, err := newSource(o, log.With("component", "config"))
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	certs := identity.NewManager(identity.ManagerOptions{
		Signer: src.signer(), Bundle: src.bundle(), Lifetime: o.certLifetime, Logger: log.With("component", "identity"),
	})
	notReady := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})
	ready := &swapHandler{h: notReady}
	admin := &swapHandler{h: notReady}
	servers, err := startServers(log, map[string]http.Handler{
		o.adminAddr: admin, o.metricsAddr: MetricsHandler(reg), o.readyAddr: ready,
	})
	if err != nil {
		return errors.Join(err, src.close())
	}
	deadline := func() time.Time { return time.Now().Add(shutdownBudget) }
	certTask := startTask("certificate manager", log, func(ctx context.Context) error { certs.Run(ctx); return nil })
	cleanup := func(errs ...error) error {
		errs = append(errs, certTask.stop(deadline()), src.close())
		errs = append(errs, stopServers(servers, deadline()))
		return errors.Join(errs...)
	}
	maps, err := waitForMaps(ctx, o.pinDir, log)
	if ctx.Err() != nil {
		if maps != nil {
			maps.Close()
		}
		return cleanup() // stopped while waiting for agentd: not an error
	}
	if err != nil {
		return cleanup(err)
	}
	addrs, err := nodeaddr.New(nodeaddr.Options{Logger: log.With("component", "nodeaddr")})
	if err != nil {
		return cleanup(err, maps.Close())
	}
	addrTask := startTask("node addresses", log, addrs.Run)
	// agentd --sockmap-accel: never splice from a socket that receives
	// redirected bytes.
	accel := bpf.NewAccelProbe(o.pinDir)
	relay.SetSpliceVeto(accel.Accelerated)
	defer func() { relay.SetSpliceVeto(nil); accel.Close() }()
	tables := bpfTables{origDst: maps.OrigDst, listeners: maps.Listeners, dnsUpstream: maps.DNSUpstream}
	podNet := podnet.Netns{Log: log, ProcSysNet: o.procSysNet}
	switch {
	case !o.callerAddress:
	case maps.Deliveries == nil:
		log.Warn("agentd pinned no deliveries map (an older agentd): apps see inbound connections from their pod's own address")
	default:
		podNet.Deliveries = deliveryTable{maps.Deliveries}
	}
	var tr *tracing
	if o.otlpEndpoint != "" {
		if tr, err = newTracing(ctx, o.otlpEndpoint, o.traceSampling, o.mode.Node, log.With("component", "tracing")); err != nil {
			return cleanup(err, maps.Close())
		}
	}
	topts := NodeOptions{
		NodeName: o.mode.Node, Logger: log, Certs: certs, OrigDst: tables, Listeners: tables, NodeAddrs: addrs, Registry: reg,
		PodNet: podNet, MaxConnections: o.maxConns, Failover: o.failover, SameNodeFastPath: o.sameNodeFastPath, HTTPPerRequest: o.httpPerRequest, Detect: o.detect, DNSUpstreams: tables, ClusterDomain: o.clusterDomain,
	}
	if tr != nil {
		topts.Tracer = tr.provider
	}
	topts.RecentRequests = o.recentRequests
	if o.recentRequests == 0 {
		topts.RecentRequests = -1 // none, where NodeOptions' 0 is the default
	}
	node := NewNode(topts)
	admin.set(node.AdminHandler())
	ready.set(gateReady(src.ready, node.ReadyHandler()))
	watchTask := startTask("config source", log, func(ctx context.Context) error {
		return src.run(ctx, node.SetConfig, certs.SetBundle)
	})
	nodeTask := startTask("node", log, node.Run)
	drains := newDrainingNode(node)
	handoffTask := startTask("agentd hand-off", log, func(ctx context.Context) error {
		// Pods come with a config only: a successor (an upgrade's new
		// ztunnel beside this one) acknowledges agentd's snapshot once
		// it set every pod up, and agentd then hands the pods over.
		if !src.waitConfigured(ctx) {
			return nil
		}
		return handoff.Connect(ctx, o.agentdSocket, drains, log.With("component", "handoff"))
	})
	log.Info("ztunnel running", append([]any{"pin_dir", o.pinDir, "agentd_socket", o.agentdSocket}, src.describe()...)...)
	<-ctx.Done()
	log.Info("ztunnel shutting down")
	handoffErr := handOver(o, drains, handoffTask, log)
	node.draining.Store(true)
	end := deadline()
	err = cleanup(handoffErr, watchTask.stop(end), nodeTask.stop(end), drains.waitUntil(end), addrTask.stop(end))
	tctx, tcancel := context.WithDeadline(context.Background(), deadline())
	err = errors.Join(err, maps.Close(), tr.stop(tctx))
	tcancel()
	log.Info("ztunnel stopped", "err", err)
	return err
}

// handOver is the first step of the shutdown: the hand-off ends, and the
// pods' connections drain when a successor took the pods over (an upgrade)
// or --handover-wait asks for one. Without --handover-wait (0) and no
// successor, the node's shutdown closes every connection as before.
//
// With --handover-wait, ztunnel first waits that long for agentd to hand
// the pods to a successor (the kubelet may have taken the successor for
// ready before it set the pods up: the readiness port is shared). Then it
// leaves agentd, which makes a waiting successor the current one, and
// drains by itself what was not handed over: new connections find the
// successor's listeners, or none (refused: fail closed). Drained
// connections run for up to --drain-timeout.
//
// The hand-off task ends by itself only once agentd handed the pods over
// and the acknowledgement is out (handoff.Connect): that is what it waits
// for, also when a hand-over has begun already, so that the shutdown does
// not cut the acknowledgement off.
func handOver(o *options, drains *drainingNode, handoffTask *task, log *slog.Logger) error {
	switch {
	case drains.HandedOver():
		handoffTask.wait(shutdownBudget) // its acknowledgement is on its way
	case o.handoverWait > 0:
		log.Info("waiting for a successor ztunnel to take the pods over", "for", o.handoverWait)
		handoffTask.wait(o.handoverWait)
	}
	err := handoffTask.stop(time.Now().Add(shutdownBudget))
	if !drains.HandedOver() {
		if o.handoverWait == 0 {
			return err
		}
		log.Info("no successor took the pods over; draining them")
		err = errors.Join(err, drains.HandOver())
	}
	log.Info("draining connections of the handed-over pods", "for_at_most", o.drainTimeout)
	if !drains.waitDrained(o.drainTimeout) {
		log.Info("closing the connections still open after the drain timeout")
	} else {
		log.Info("handed-over pods drained")
	}
	return err
}

// waitForMaps opens agentd's pinned maps, waiting for agentd to pin them.
func waitForMaps(ctx context.Context, pinDir string, log *slog.Logger) (*bpf.PinnedMaps, error) {
	logged := false
	for {
		m, err := bpf.OpenPinnedMaps(pinDir)
		if err == nil {
			return m, nil
		}
		if !logged {
			log.Warn("waiting for agentd's pinned maps", "pin_dir", pinDir, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open pinned maps in %s: %w", pinDir, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// server is one HTTP endpoint of Run.
type server struct {
	srv  *http.Server
	done chan struct{}
}

// startServers listens on every address (failing fast on a taken port) and
// serves each on its own goroutine.
func startServers(log *slog.Logger, handlers map[string]http.Handler) ([]*server, error) {
	var out []*server
	// SO_REUSEPORT: during an upgrade the next ztunnel (a DaemonSet's
	// surge pod, in the same host netns) binds the same ports beside this
	// one until this one stops.
	lc := net.ListenConfig{Control: podnet.ReusePort}
	for addr, h := range handlers {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			stopServers(out, time.Now().Add(time.Second))
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		s := &server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
		go func() {
			defer close(s.done)
			if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server failed", "addr", addr, "err", err)
			}
		}()
		out = append(out, s)
	}
	return out, nil
}

func stopServers(servers []*server, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
			errs = append(errs, fmt.Errorf("stop http server %s: %w", s.srv.Addr, err))
		}
		<-s.done
	}
	return errors.Join(errs...)
}
