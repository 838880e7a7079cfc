// Package controller is AgentMesh's control plane: it watches Kubernetes,
// streams one view per node to every node's agentd and ztunnel, and signs
// workload certificates for the pods on the asking node.
//
// It needs these permissions: list and watch pods, namespaces, services,
// nodes, serviceaccounts (core), endpointslices (discovery.k8s.io) and
// agentpolicies (agentmesh.io) cluster-wide (nodes: only nodes with a Node
// object get a config stream, and a deleted Node's streams are closed;
// serviceaccounts: the CA signs only identities whose ServiceAccount
// exists); patch agentpolicies/status (the leader's server-side apply of
// the Accepted condition); list and watch trafficpolicies (agentmesh.io)
// cluster-wide and patch trafficpolicies/status (the leader's server-side
// apply of their Accepted condition); list and watch httproutes, grpcroutes
// (gateway.networking.k8s.io/v1) and referencegrants (v1beta1)
// cluster-wide, get httproutes and grpcroutes and update their status
// (the leader's read-modify-write of the route status entries of
// view.GatewayControllerName); create and patch events (Warning events on
// AgentPolicies and on namespaces and pods with invalid annotations);
// create tokenreviews (authentication.k8s.io); in its own namespace get
// and create secrets, get, create and update configmaps, and get, create
// and update leases (coordination.k8s.io).
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/controller/auth"
	"github.com/agentmesh/agentmesh/controller/ca"
	"github.com/agentmesh/agentmesh/controller/policystatus"
	"github.com/agentmesh/agentmesh/controller/routestatus"
	"github.com/agentmesh/agentmesh/controller/stream"
	"github.com/agentmesh/agentmesh/controller/trafficstatus"
	"github.com/agentmesh/agentmesh/controller/view"
	"github.com/agentmesh/agentmesh/internal/profile"
)

// shutdownBudget bounds the graceful part of shutdown.
const shutdownBudget = 10 * time.Second

// Run is the controller process: it parses args, serves until ctx is done
// and returns after everything it started has stopped. Logs go to stderr,
// usage to stdout.
func Run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := o.log.Logger(os.Stderr).With("component", "controller")
	stopProfile, err := profile.Start(o.cpuProfile, o.allocProfile)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopProfile()) }()
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(o.kubeQPS), o.kubeBurst
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	// TokenReviews get a rate limiter of their own: a hundred nodes
	// reconnecting at once (a controller restart) must neither wait behind
	// status writes nor starve them.
	reviewClient, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return run(ctx, o, deps{client: client, dynamic: dyn, reviewer: auth.KubeReviewer{Client: reviewClient}, listener: lis, log: log})
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (set --kubeconfig outside a cluster): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	return cfg, nil
}

// deps are what run needs from outside; tests pass fakes.
type deps struct {
	client   kubernetes.Interface
	dynamic  dynamic.Interface // AgentPolicies, Gateway API routes
	reviewer auth.TokenReviewer
	listener net.Listener // the gRPC listener; run closes it
	admin    net.Listener // optional: the admin HTTP listener instead of --metrics-addr
	log      *slog.Logger
}

// run builds the pieces in order, each from what it needs, then serves.
// The watcher's caches come first (the status writers, the CA and the
// stream server read them); its output goes to views, which run hands to
// the watcher when it starts it. Start order: the AgentPolicy CRD check,
// the Gateway API and TrafficPolicy discovery (routes and TrafficPolicies
// are off without their CRDs), CA root, informers, gRPC server, admin
// HTTP, leader election and the policy, route and TrafficPolicy status
// writers. Shutdown order: the hub closes (every stream
// ends with Unavailable and nodes reconnect, possibly to another replica),
// the gRPC server stops, then informers, leader election (the lease is
// released) and the admin server.
func run(ctx context.Context, o *options, d deps) error {
	defer d.listener.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := view.CheckCRD(ctx, d.dynamic); err != nil {
		return err
	}
	gateway, err := view.DetectGatewayAPI(ctx, d.client.Discovery())
	if err != nil {
		return err
	}
	if missing := gateway.Missing(); missing != "" {
		d.log.Info("Gateway API resources not served, not watched", "missing", missing, "routes", gateway.Any(),
			"hint", "install the Gateway API CRDs (the chart's crds/) and restart the controller")
	}
	trafficPolicies, err := view.DetectTrafficPolicy(ctx, d.client.Discovery())
	if err != nil {
		return err
	}
	if !trafficPolicies {
		d.log.Info("TrafficPolicy resource not served, not watched", "missing", view.TrafficPolicyResource.String(),
			"hint", "install the chart's CRDs (crds/agentmesh.io_trafficpolicies.yaml) and restart the controller")
	}
	roots, err := ca.EnsureRoot(ctx, d.client, o.namespace, o.caSecret, o.trustDomain, d.log)
	if err != nil {
		return err
	}
	rec, stopEvents, err := newRecorder(d.client)
	if err != nil {
		return err
	}
	defer stopEvents()
	watcher, err := view.NewWatcher(d.client, d.dynamic, view.Options{TrustDomain: o.trustDomain, Debounce: o.debounce,
		Gateway: gateway, TrafficPolicies: trafficPolicies, Logger: d.log})
	if err != nil {
		return err
	}
	statuses := policystatus.New(policystatus.Options{Client: d.dynamic, Events: rec, Current: watcher.Policy, Logger: d.log})
	routeStatuses := routestatus.New(routestatus.Options{Client: d.dynamic, Current: watcher.RouteStatus, Logger: d.log})
	trafficStatuses := trafficstatus.New(trafficstatus.Options{Client: d.dynamic, Current: watcher.TrafficPolicy, Logger: d.log})
	l := newLeader(d.client, o, roots.BundlePEM(), leaderWriters{statuses, routeStatuses, trafficStatuses}, d.log, reg)
	authority, err := ca.New(ca.Options{CertPEM: roots.CertPEM, KeyPEM: roots.KeyPEM, TrustDomain: o.trustDomain,
		Lifetime: o.certLifetime, Pods: watcher, ServiceAccounts: watcher, Logger: d.log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := authority.SetRoots(roots); err != nil {
		return err
	}
	serving, err := authority.NewServing(o.servingNames)
	if err != nil {
		return err
	}
	authn := auth.New(auth.Options{Reviewer: d.reviewer, Audiences: o.audiences, NodeServiceAccounts: o.nodeSAs, Logger: d.log})
	hub := stream.NewHub(stream.All)
	hub.SetTrustBundle(roots.BundlePEM())
	rotation := &ca.Rotation{Client: d.client, Namespace: o.namespace, Name: o.caSecret, Leads: l.leads, Kick: l.rotate,
		Timing: ca.Timing{Propagation: o.caPropagation, LeafLifetime: o.certLifetime, RotateBefore: o.caRotateBefore,
			TrustDomain: o.trustDomain},
		OnRoots: func(r ca.Roots) {
			if err := authority.SetRoots(r); err != nil {
				d.log.Error("ca secret changed to roots that cannot sign: the roots in use stay", "err", err)
				return
			}
			hub.SetTrustBundle(r.BundlePEM())
			l.setBundle(r.BundlePEM())
		},
		Logger: d.log.With("component", "ca-rotation")}
	streams := stream.NewServer(stream.Options{Hub: hub, Authorize: auth.AuthorizeNode, NodeExists: watcher.NodeExists,
		Logger: d.log, Registerer: reg})
	gs := newGRPCServer(serving, authn)
	configapi.Register(gs, meshService{Server: streams, ca: authority})
	out := &views{hub: hub, statuses: statuses, routes: routeStatuses, traffic: trafficStatuses, streams: streams}
	return serve(ctx, o, d, tasks{
		watcher:       func(ctx context.Context) error { return watcher.Run(ctx, out) },
		roots:         rotation.Run,
		leader:        l.run,
		status:        statuses.Run,
		routeStatus:   routeStatuses.Run,
		trafficStatus: trafficStatuses.Run,
		grpc:          gs,
		hub:           hub,
		streams:       streams,
		admin:         adminHandler(reg, streams, hub, l, o.identity, debugWorkload{hub: hub, policy: watcher.Policy}),
	})
}

func newGRPCServer(serving *ca.Serving, authn *auth.Authenticator) *grpc.Server {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: serving.GetCertificate, NextProtos: []string{"h2"}}
	return grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.MaxRecvMsgSize(configapi.MaxRequestSize),
		grpc.UnaryInterceptor(authn.Unary),
		grpc.StreamInterceptor(authn.Stream),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(10*time.Second),
	)
}

// tasks are the long-running parts serve starts and stops.
type tasks struct {
	watcher func(context.Context) error
	roots   func(context.Context) error // the CA Secret (ca.Rotation)
	leader  func(context.Context)
	status  func(context.Context)
	// routeStatus and trafficStatus run the route and TrafficPolicy
	// status writers (nil: none).
	routeStatus, trafficStatus func(context.Context)

	grpc    *grpc.Server
	hub     *stream.Hub
	streams *stream.Server
	admin   http.Handler
}

func serve(ctx context.Context, o *options, d deps, t tasks) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := t.watcher(ctx); err != nil {
			cancel(fmt.Errorf("watch kubernetes: %w", err))
		}
	})
	if t.roots != nil {
		wg.Go(func() {
			if err := t.roots(ctx); err != nil {
				cancel(fmt.Errorf("watch ca secret: %w", err))
			}
		})
	}
	wg.Go(func() { t.leader(ctx) })
	wg.Go(func() { t.status(ctx) })
	for _, run := range []func(context.Context){t.routeStatus, t.trafficStatus} {
		if run != nil {
			wg.Go(func() { run(ctx) })
		}
	}
	grpcDone := make(chan error, 1)
	go func() { grpcDone <- t.grpc.Serve(d.listener) }()
	var admin *http.Server
	lis, err := adminListener(o, d)
	switch {
	case err != nil:
		cancel(err)
	case lis != nil:
		admin = &http.Server{Handler: t.admin, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { admin.Serve(lis) })
	}
	d.log.Info("controller serving", "grpc", d.listener.Addr().String(), "metrics", o.metricsAddr)
	select {
	case <-ctx.Done():
	case err := <-grpcDone:
		cancel(fmt.Errorf("grpc serve: %w", err))
	}
	t.hub.Close()
	stopGRPC(t.grpc)
	t.streams.Wait()
	cancel(nil)
	if admin != nil {
		sctx, scancel := context.WithTimeout(context.Background(), shutdownBudget)
		admin.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	d.log.Info("controller stopped")
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func adminListener(o *options, d deps) (net.Listener, error) {
	if d.admin != nil || o.metricsAddr == "" {
		return d.admin, nil
	}
	lis, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics: %w", err)
	}
	return lis, nil
}

// stopGRPC stops gracefully within the budget, then hard.
func stopGRPC(s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownBudget):
		s.Stop()
		<-done
	}
}
