// Package loader loads AgentMesh's eBPF programs, pins them under a pin
// directory in bpffs, attaches the capture programs to the node's cgroup v2
// root and enrolls pod network namespaces. Pins outlive the process: a
// restarted agentd reuses the pinned maps and links (and updates the links
// to the newly loaded programs), so capture is never interrupted.
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/cilium/ebpf/link"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/bpf"
)

// Options configure Open.
type Options struct {
	PinDir     string       // "" = mesh.DefaultPinDir
	CgroupPath string       // "" = the cgroup2 mount root from /proc/self/mountinfo
	Logger     *slog.Logger // nil = discard
	// SockmapAccel loads and attaches the loopback-leg acceleration
	// (bpf/sockmap.c); a kernel that cannot run it gets a warning and
	// the datapath without it. false detaches the one of an earlier run.
	SockmapAccel bool
}

// Stats are the datapath counters summed over CPUs.
type Stats = bpf.Counters

// Datapath is the loaded and pinned eBPF datapath. Its methods are safe for
// concurrent use; Enroll, Unenroll, Enrolled and Stats fail after Close.
type Datapath struct {
	pinDir string
	log    *slog.Logger

	mu    sync.Mutex
	objs  *bpf.Objects         // guarded by mu; nil after Close
	links map[string]link.Link // by pin name; guarded by mu
}

var errClosed = errors.New("datapath closed")

// Open loads the programs and pins maps, programs and links under
// opts.PinDir, reusing the pins of an earlier run (see the package doc).
func Open(opts Options) (_ *Datapath, err error) {
	d := &Datapath{pinDir: opts.PinDir, log: opts.Logger, links: map[string]link.Link{}}
	if d.pinDir == "" {
		d.pinDir = mesh.DefaultPinDir
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	cg := opts.CgroupPath
	if cg == "" {
		if cg, err = FindCgroup2Root(); err != nil {
			return nil, err
		}
	}
	if err := checkFeatures(); err != nil {
		return nil, err
	}
	if err := ensureBPFFS(d.log); err != nil {
		return nil, err
	}
	for _, sub := range []string{bpf.MapsDir, bpf.ProgsDir, bpf.LinksDir} {
		if err := os.MkdirAll(d.pinDir+"/"+sub, 0o700); err != nil {
			return nil, fmt.Errorf("make pin dir: %w", err)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Close())
		}
	}()
	if d.objs, err = loadObjects(d.pinDir, d.log); err != nil {
		return nil, err
	}
	if err := d.pinPrograms(); err != nil {
		return nil, err
	}
	if err := d.attachCgroupLinks(cg); err != nil {
		return nil, err
	}
	if err := d.reloadSkLookupLinks(); err != nil {
		return nil, err
	}
	accel := false
	if opts.SockmapAccel {
		if err := d.enableAccel(cg); err != nil {
			d.log.Warn("loopback acceleration (--sockmap-accel) unavailable, running without it", "err", err)
			if err := d.disableAccel(); err != nil {
				return nil, fmt.Errorf("undo loopback acceleration: %w", err)
			}
		} else {
			accel = true
		}
	} else if err := d.disableAccel(); err != nil {
		return nil, fmt.Errorf("remove loopback acceleration: %w", err)
	}
	d.log.Info("datapath loaded", "pin_dir", d.pinDir, "cgroup", cg, "sockmap_accel", accel)
	return d, nil
}

// PinDir is the directory holding the pins.
func (d *Datapath) PinDir() string { return d.pinDir }

// Stats reads the datapath counters.
func (d *Datapath) Stats() (Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return Stats{}, errClosed
	}
	return bpf.ReadCounters(d.objs.Maps[bpf.MapStats])
}

// AccelStats reads the counters of the loopback-leg acceleration (its own
// map, accel_stats); ok is false when it is not loaded (SockmapAccel off,
// or the kernel cannot run it).
func (d *Datapath) AccelStats() (_ bpf.AccelCounters, ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return bpf.AccelCounters{}, false, errClosed
	}
	m := d.objs.Maps[bpf.MapAccelStats]
	if m == nil {
		return bpf.AccelCounters{}, false, nil
	}
	c, err := bpf.ReadAccelCounters(m)
	return c, err == nil, err
}

// Close closes every file descriptor; pins, and so attachments and map
// contents, stay. Close is idempotent.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for name, l := range d.links {
		errs = append(errs, l.Close())
		delete(d.links, name)
	}
	if d.objs != nil {
		errs = append(errs, d.objs.Close())
		d.objs = nil
	}
	return errors.Join(errs...)
}
