package services

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/agentmesh/agentmesh/test/lab"
)

// Kind is how a row's client addresses its server.
type Kind int

// The rows, in the order they are measured.
const (
	Direct Kind = iota // outside the mesh, by pod IP
	PodIP              // through the mesh, by pod IP
	VIP                // through the mesh, by the Service's ClusterIP
)

func (k Kind) String() string {
	return [...]string{"direct", "mesh pod IP", "mesh VIP"}[k]
}

// Row is what one row measured. Err is set when it could not be measured
// completely or its path was wrong.
type Row struct {
	Kind    Kind
	Target  netip.AddrPort // the address the client dialed
	Path    string         // how ztunnel says it carried the traffic; "direct" without it
	Latency Latency
	Connect Connect
	Err     error
}

// Result is a run's rows and the sizes they were measured with.
type Result struct {
	Options Options
	Rows    []Row
}

// Row returns the row of kind k, nil if it was not measured.
func (r *Result) Row(k Kind) *Row {
	for i := range r.Rows {
		if r.Rows[i].Kind == k {
			return &r.Rows[i]
		}
	}
	return nil
}

// Warm-up: short runs until one goes without an error.
const (
	warmUpTimeout  = 30 * time.Second
	warmUpDuration = 300 * time.Millisecond
	warmUpRate     = 100
	warmUpPause    = 500 * time.Millisecond
)

// Measure starts the lab, measures the rows and removes the lab again. A
// row that fails does not stop the others; the error joins every row's.
func Measure(ctx context.Context, o Options) (res *Result, err error) {
	if o, err = o.withDefaults(); err != nil {
		return nil, err
	}
	o.Logger.Info("starting kubernetes-mode lab", "nodes", 2)
	l, err := lab.New(ctx, lab.Options{Nodes: 2, BinDir: o.BinDir, KubeBinDir: o.kubeBinDir(), Kube: true,
		StartMesh: true, ReadyTimeout: 45 * time.Second, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("services bench lab: %w", err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("services bench: close lab: %w", cerr))
		}
	}()
	s, err := makeSetup(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("services bench setup: %w", err)
	}
	res = &Result{Options: o}
	var errs []error
	for _, k := range []Kind{Direct, PodIP, VIP} {
		r := measureRow(ctx, l, o, s, k)
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, r.Err))
		}
		res.Rows = append(res.Rows, r)
	}
	return res, errors.Join(errs...)
}

// measureRow warms up, measures latency and then new connections from
// the row's client to its target, and checks the path.
func measureRow(ctx context.Context, l *lab.Lab, o Options, s *setup, k Kind) (r Row) {
	r.Kind = k
	client := s.meshClient
	switch k {
	case Direct:
		client, r.Target = s.directClient, netip.AddrPortFrom(s.directServer.IPv4(), echoPort)
	case PodIP:
		r.Target = netip.AddrPortFrom(s.meshServer.IPv4(), echoPort)
	case VIP:
		r.Target = netip.AddrPortFrom(s.vip, echoPort)
	}
	o.Logger.Info("measuring", "row", k.String(), "target", r.Target)
	if r.Err = warmUp(ctx, o, client, r.Target); r.Err != nil {
		return r
	}
	since := time.Now()
	picks, err := endpointPicks(ctx, l, k)
	if err != nil {
		r.Err = err
		return r
	}
	if r.Latency, r.Err = latency(ctx, o, client, r.Target, o.Duration, o.Rate); r.Err != nil {
		return r
	}
	if r.Connect, r.Err = connect(ctx, o, client, r.Target, o.ConnectDuration, o.Concurrency); r.Err != nil {
		return r
	}
	r.Path, r.Err = checkPath(ctx, l, s, k, r.Target, since, o.Conns+r.Connect.Connections, picks)
	o.Logger.Info("measured", "row", k.String(), "path", r.Path, "p50_us", r.Latency.P50us, "conns_per_s", r.Connect.PerSecond, "err", r.Err)
	return r
}

// warmUp runs both clients briefly until a run of each has no error:
// servers answering, certificates issued, HBONE connections pooled.
func warmUp(ctx context.Context, o Options, client *lab.Pod, to netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, warmUpTimeout)
	defer cancel()
	for {
		err := warmUpOnce(ctx, o, client, to)
		if err == nil {
			return nil
		}
		o.Logger.Info("warm-up failed", "to", to, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm up for %v: %w", warmUpTimeout, err)
		case <-time.After(warmUpPause):
		}
	}
}

func warmUpOnce(ctx context.Context, o Options, client *lab.Pod, to netip.AddrPort) error {
	c, err := connect(ctx, o, client, to, warmUpDuration, min(2, o.Concurrency))
	if err != nil {
		return err
	}
	if c.Errors > 0 || c.Connections == 0 {
		return fmt.Errorf("%d connections, %d failed: %s", c.Connections, c.Errors, c.FirstError)
	}
	s, err := latency(ctx, o, client, to, warmUpDuration, min(warmUpRate, o.Rate))
	if err != nil {
		return err
	}
	if s.Errors > 0 {
		return fmt.Errorf("%d of %d requests failed: %s", s.Errors, s.Scheduled, s.FirstError)
	}
	return nil
}
