package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/agentmesh/agentmesh/bpf"
)

// The loopback-leg acceleration (bpf/sockmap.c, --sockmap-accel) is an
// optimisation: when the kernel cannot run it, Open warns and goes on
// without it.

var accelFeatures = []struct {
	name  string
	probe func() error
}{
	{"sk_msg programs", func() error { return features.HaveProgramType(ebpf.SkMsg) }},
	{"bpf_msg_redirect_hash in sk_msg", func() error {
		return features.HaveProgramHelper(ebpf.SkMsg, asm.FnMsgRedirectHash)
	}},
	{"bpf_get_netns_cookie in sk_msg", func() error {
		return features.HaveProgramHelper(ebpf.SkMsg, asm.FnGetNetnsCookie)
	}},
	{"bpf_sock_hash_update in sock_ops", func() error {
		return features.HaveProgramHelper(ebpf.SockOps, asm.FnSockHashUpdate)
	}},
}

// enableAccel loads sockmap.c, pins its maps and programs, attaches
// accel_sk_msg to accel_socks and accel_sockops to cgroup (the link of an
// earlier run is updated). On error the caller runs disableAccel.
func (d *Datapath) enableAccel(cgroup string) error {
	for _, f := range accelFeatures {
		if err := f.probe(); errors.Is(err, ebpf.ErrNotSupported) {
			return &FeatureError{Feature: f.name, Err: err}
		} else if err != nil {
			return fmt.Errorf("probe %s: %w", f.name, err)
		}
	}
	existing := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range existing {
			m.Close()
		}
	}()
	for _, name := range bpf.AccelMapNames {
		m, err := ebpf.LoadPinnedMap(bpf.MapPin(d.pinDir, name), nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", name, err)
		}
		existing[name] = m
	}
	if err := d.objs.LoadAccel(existing); err != nil {
		return fmt.Errorf("load (if a pinned map is incompatible, run cleanup): %w", err)
	}
	for _, name := range bpf.AccelMapNames {
		if existing[name] != nil {
			continue
		}
		if err := d.objs.Maps[name].Pin(bpf.MapPin(d.pinDir, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	for _, name := range bpf.AccelProgNames {
		if err := pinProgram(d.objs.Programs[name], bpf.ProgPin(d.pinDir, name)); err != nil {
			return fmt.Errorf("pin program %s: %w", name, err)
		}
	}
	if err := d.objs.AttachAccelMsg(); err != nil {
		return err
	}
	return d.attachCgroupLink(bpf.ProgAccelSockOps, ebpf.AttachCGroupSockOps, cgroup)
}

// disableAccel undoes enableAccel, also for the pins of an earlier run:
// accel_sockops is detached (no socket joins any more) and the program
// pins go. accel_socks, with accel_sk_msg attached, accel_tcp_only and
// accel_stats stay pinned while sockets accelerated earlier are open
// (removing accel_socks would drop the bytes waiting in those sockets'
// queues); the first Open after they closed removes them, as does Cleanup.
func (d *Datapath) disableAccel() error {
	var errs []error
	pin := bpf.LinkPin(d.pinDir, bpf.ProgAccelSockOps)
	l := d.links[bpf.ProgAccelSockOps]
	if l == nil {
		var err error
		l, err = link.LoadPinnedLink(pin, nil)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", bpf.ProgAccelSockOps, err))
		}
	}
	if l != nil {
		if err := l.Unpin(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin link %s: %w", bpf.ProgAccelSockOps, err))
		}
		errs = append(errs, l.Close())
		delete(d.links, bpf.ProgAccelSockOps)
	}
	for _, name := range bpf.AccelProgNames {
		if err := os.Remove(bpf.ProgPin(d.pinDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove program pin %s: %w", name, err))
		}
	}
	errs = append(errs, d.objs.CloseAccel())
	n, err := pinnedAccelSocks(d.pinDir)
	switch {
	case err != nil:
		errs = append(errs, err)
	case n > 0:
		d.log.Info("loopback acceleration off; its map stays until its sockets close", "map", bpf.MapAccelSocks, "sockets", n)
	default:
		for _, name := range bpf.AccelMapNames {
			if err := os.Remove(bpf.MapPin(d.pinDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove map pin %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// pinnedAccelSocks counts the sockets in the pinned accel_socks (0 without
// a pin).
func pinnedAccelSocks(pinDir string) (int, error) {
	m, err := ebpf.LoadPinnedMap(bpf.MapPin(pinDir, bpf.MapAccelSocks), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open pinned map %s: %w", bpf.MapAccelSocks, err)
	}
	defer m.Close()
	n := 0
	key := make([]byte, m.KeySize())
	var cookie uint64
	it := m.Iterate()
	for it.Next(&key, &cookie) {
		n++
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("count %s: %w", bpf.MapAccelSocks, err)
	}
	return n, nil
}
