package lab

import (
	"errors"
	"os"
	"path/filepath"
)

// Leftovers lists what still exists of lab id: named netns, and the cgroup,
// pin and state directories. Empty means the lab is fully removed.
func Leftovers(id string) ([]string, error) {
	names, err := labNetns(id + "-")
	var out []string
	for _, n := range names {
		out = append(out, netnsPath(n))
	}
	dirs := []string{filepath.Join(BPFRoot, id), filepath.Join(StateRoot, id)}
	if root, rerr := CgroupRoot(); rerr == nil {
		dirs = append(dirs, filepath.Join(root, id))
	} else {
		err = errors.Join(err, rerr)
	}
	for _, d := range dirs {
		if _, serr := os.Stat(d); serr == nil {
			out = append(out, d)
		}
	}
	return out, err
}
