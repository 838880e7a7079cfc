package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// FeatureError names a kernel feature the datapath needs and the kernel
// lacks. It wraps ebpf.ErrNotSupported.
type FeatureError struct {
	Feature string
	Err     error
}

func (e *FeatureError) Error() string { return "kernel lacks " + e.Feature + ": " + e.Err.Error() }

// Unwrap returns ebpf.ErrNotSupported and the probe's error.
func (e *FeatureError) Unwrap() []error { return []error{ebpf.ErrNotSupported, e.Err} }

var requiredFeatures = []struct {
	name  string
	probe func() error
}{
	{"cgroup sock_addr programs", func() error { return features.HaveProgramType(ebpf.CGroupSockAddr) }},
	{"sock_ops programs", func() error { return features.HaveProgramType(ebpf.SockOps) }},
	{"sk_lookup programs", func() error { return features.HaveProgramType(ebpf.SkLookup) }},
	{"sockhash maps", func() error { return features.HaveMapType(ebpf.SockHash) }},
	{"lru hash maps", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"per-cpu array maps", func() error { return features.HaveMapType(ebpf.PerCPUArray) }},
	{"bpf_get_netns_cookie in cgroup/connect", func() error {
		return features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetNetnsCookie)
	}},
	{"bpf_get_netns_cookie in sock_ops", func() error {
		return features.HaveProgramHelper(ebpf.SockOps, asm.FnGetNetnsCookie)
	}},
	{"bpf_sk_assign in sk_lookup", func() error { return features.HaveProgramHelper(ebpf.SkLookup, asm.FnSkAssign) }},
}

// checkFeatures probes the kernel for everything the datapath uses.
func checkFeatures() error {
	for _, f := range requiredFeatures {
		err := f.probe()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return &FeatureError{Feature: f.name, Err: err}
		}
		if err != nil {
			return fmt.Errorf("probe %s: %w", f.name, err)
		}
	}
	return nil
}
