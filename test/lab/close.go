package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Close ends the supervision of daemons (nothing is restarted after it
// began), stops every process the lab started (kubelets and pods first,
// then ztunnel, then agentd, which then cleans up its eBPF state, then the
// controllers and the Kubernetes control plane), kills whatever is
// left in the lab's cgroups, and removes the network namespaces, cgroups,
// pins and the state directory. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, captures := l.processes, l.captures
	l.processes, l.captures = nil, nil
	l.mu.Unlock()
	l.sup.close() // first: nothing is restarted from here on

	var errs []error
	for _, c := range captures {
		_, _ = c.Stop()
	}
	l.stopKubelets() // first, so no kubelet restarts a pod's process
	errs = append(errs, l.stopRealNodes()...)
	for _, p := range procs {
		errs = append(errs, p.Stop())
	}
	errs = append(errs, l.stopMesh()...)
	errs = append(errs, l.stopControllers()...)
	errs = append(errs, l.sup.stopAll()...)
	errs = append(errs, l.stopControlPlane())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs = append(errs, removeLeftovers(ctx, l.id))
	err := errors.Join(errs...)
	if err != nil {
		l.log.Warn("lab cleanup incomplete", "err", err)
	} else {
		l.log.Info("lab removed")
	}
	return err
}

// removeLeftovers removes everything named after lab id: cgroups (killing
// their processes first), network namespaces, bpffs pins, state dir.
func removeLeftovers(ctx context.Context, id string) error {
	var errs []error
	if root, err := CgroupRoot(); err == nil {
		errs = append(errs, removeCgroupTree(ctx, filepath.Join(root, id)))
	} else {
		errs = append(errs, err)
	}
	if err := removeRealNodeLeftovers(id, filepath.Join(StateRoot, id)); err != nil {
		// The state dir keeps the host's saved state for the next try.
		return errors.Join(append(errs, fmt.Errorf("real nodes: %w (state dir kept)", err))...)
	}
	names, err := labNetns(id + "-")
	errs = append(errs, err)
	for _, n := range names {
		errs = append(errs, deleteNetns(n))
	}
	if err := os.RemoveAll(filepath.Join(BPFRoot, id)); err != nil {
		errs = append(errs, fmt.Errorf("remove pins: %w", err))
	}
	if err := os.RemoveAll(filepath.Join(StateRoot, id)); err != nil {
		errs = append(errs, fmt.Errorf("remove state dir: %w", err))
	}
	return errors.Join(errs...)
}

// labNetns lists the named network namespaces starting with prefix.
func labNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
