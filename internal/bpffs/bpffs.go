// Package bpffs makes sure the BPF filesystem is mounted where pins go.
// A fresh machine (a CI runner, a node before its first agentd) may not
// have it mounted yet.
package bpffs

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Path is where bpffs is mounted and pins live.
const Path = "/sys/fs/bpf"

// Ensure mounts bpffs at Path unless it is mounted there already, and
// reports whether it mounted it.
func Ensure() (mounted bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(Path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", Path, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if err := unix.Mount("bpf", Path, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w", Path, err)
	}
	return true, nil
}
