package agentd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/agentd/loader"
	"github.com/agentmesh/agentmesh/api/configapi"
	"github.com/agentmesh/agentmesh/api/meshconfig"
	"github.com/agentmesh/agentmesh/internal/cnigate"
	"github.com/agentmesh/agentmesh/internal/configsource"
	"github.com/agentmesh/agentmesh/internal/handoff"
)

// run is agentd run with its datapath opener injected.
//
// In Kubernetes mode the first sync, and with it the hand-off socket,
// waits for the controller's first config; while the controller is away
// the last config stays in force and nothing is unenrolled.
//
// Shutdown order (ctx done): first the config loop stops, so nothing
// changes any more (in Kubernetes mode the config stream is closed); then
// the hand-off server closes, and ztunnel keeps its pods and listeners and
// retries connecting (the next agentd sends a full snapshot); last the
// datapath is closed, which keeps every pin. Pods are deliberately not
// unenrolled: capture must survive an agentd restart or upgrade, and
// "agentd cleanup" is the way to remove the mesh from a node.
func run(ctx context.Context, o *options, log *slog.Logger, open func(loader.Options) (Datapath, error)) (err error) {
	log = log.With("node", o.mode.Node)
	src, err := configsource.New(o.mode, configsource.Options{Component: configapi.ComponentAgentd,
		Interval: o.watchInterval, Logger: log.With("component", "config")})
	if err != nil {
		return err
	}
	finder, err := newFinder(o, log.With("component", "config"))
	if err != nil {
		return err
	}
	dp, err := open(loader.Options{PinDir: o.pinDir, CgroupPath: o.cgroup, SockmapAccel: o.accel, Logger: log.With("component", "datapath")})
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	defer func() { err = errors.Join(err, closeDatapath(dp)) }()
	r, err := newReconciler(o.mode.Node, dp, nil, log.With("component", "reconcile"))
	if err != nil {
		return err
	}
	r.finder = finder
	var gateReqs chan *gateRequest // nil: no CNI gate
	var gs *cnigate.Server
	var inst *cniInstall
	if o.cniSocket != "" {
		if o.cniConfDir != "" {
			if inst, err = newCNIInstall(o, log.With("component", "cni-install")); err != nil {
				return err
			}
		}
		gateReqs = make(chan *gateRequest)
		g := &gate{reqs: gateReqs, wait: o.cniWait, log: log.With("component", "cni-gate")}
		if gs, err = cnigate.Listen(o.cniSocket, g.handle, g.log); err != nil {
			return err
		}
	}
	srv, err := handoff.Listen(o.socket, log.With("component", "handoff"))
	if err != nil {
		if gs != nil {
			gs.Close()
		}
		return err
	}
	r.ho = srv
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var srvErr error
	// The server starts serving only after the first sync: a ztunnel that
	// connects earlier waits in the accept queue instead of getting an
	// empty snapshot after an agentd restart, which would make it drop
	// every pod only to get them back a moment later.
	serve := sync.OnceFunc(func() {
		wg.Go(func() {
			srvErr = srv.Run(ctx)
			cancel() // a failed server ends agentd
		})
	})
	var gateErr error
	if gs != nil {
		wg.Go(func() {
			gateErr = gs.Run(ctx)
			cancel() // a failed gate ends agentd
		})
	}
	if inst != nil {
		// Chained only once the gate listens; taken out when agentd stops.
		wg.Go(func() { inst.keep(ctx, cniEnsureInterval) })
	}
	log.Info("agentd running", append([]any{"socket", o.socket, "pin_dir", o.pinDir, "cni_socket", o.cniSocket}, src.Describe()...)...)
	loop(ctx, src, o.retryInterval, r, log, serve, gateReqs)
	if err := src.Close(); err != nil {
		log.Warn("close config source", "err", err)
	}
	cancel()
	serve() // if it never started: Run returns at once and removes the socket
	wg.Wait()
	if srvErr != nil {
		return fmt.Errorf("hand-off server: %w", srvErr)
	}
	if gateErr != nil {
		return fmt.Errorf("CNI gate: %w", gateErr)
	}
	log.Info("agentd stopped; pods stay enrolled")
	return nil
}

// newFinder returns the finder of pod network namespaces in Kubernetes
// mode: by their cgroup below --cgroup (default: the cgroup2 root). In
// standalone mode it is nil: Workload.Netns names them.
func newFinder(o *options, log *slog.Logger) (NetnsFinder, error) {
	if !o.mode.Kubernetes() {
		return nil, nil
	}
	root := o.cgroup
	if root == "" {
		var err error
		if root, err = loader.FindCgroup2Root(); err != nil {
			return nil, err
		}
	}
	return NewCgroupFinder(root, log)
}

func closeDatapath(dp Datapath) error {
	if err := dp.Close(); err != nil {
		return fmt.Errorf("close datapath: %w", err)
	}
	return nil
}

// loop reconciles every new config from src, and retries failed pods
// every retryInterval, until ctx is done. It calls synced after every sync.
// It returns after src ended. While the controller is away src applies
// nothing, so the last config stays. It answers the CNI gate's requests
// (nil: no gate) from the last config, or holds them for the next.
func loop(ctx context.Context, src *configsource.Source, retryInterval time.Duration, r *reconciler, log *slog.Logger, synced func(), gateReqs <-chan *gateRequest) {
	configs := make(chan *meshconfig.Config, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		src.Run(ctx, func(c *meshconfig.Config) { offerLatest(configs, c) }, nil) //nolint:errcheck // returns nil when ctx is done
	})
	retry := time.NewTimer(0)
	retry.Stop()
	var last *meshconfig.Config
	var idx *meshconfig.Index
	var held gates
	defer held.close()
	for {
		select {
		case <-ctx.Done():
			return
		case last = <-configs:
			idx = meshconfig.NewIndex(last)
			log.Info("mesh config loaded", "workloads", len(last.Workloads))
		case <-retry.C:
			log.Info("retrying failed pods")
		case g := <-gateReqs:
			held.add(g, r, idx)
			continue
		}
		if err := r.sync(last); err != nil {
			log.Warn("reconcile incomplete, will retry", "in", retryInterval, "err", err)
			retry.Reset(retryInterval)
		} else {
			retry.Stop()
			log.Info("reconciled", "enrolled_pods", len(r.pods))
		}
		held.retry(r, idx)
		synced()
	}
}

// offerLatest puts c in ch (capacity 1), replacing an unread older config.
// Only one goroutine may send on ch.
func offerLatest(ch chan *meshconfig.Config, c *meshconfig.Config) {
	for {
		select {
		case ch <- c:
			return
		default:
			select {
			case <-ch:
			default:
			}
		}
	}
}
