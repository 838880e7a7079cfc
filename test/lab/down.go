package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Down removes the leftovers of every lab, running or crashed: it kills the
// processes recorded in /run/amlab/*/pids whose start time still matches,
// then removes amlab-* network namespaces, cgroups, bpffs pin directories
// and state directories. It returns the lab ids it cleaned.
func Down(log *slog.Logger) ([]string, error) {
	ids, err := leftoverIDs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, DownLab(log, id))
	}
	return ids, errors.Join(errs...)
}

// DownLab removes the leftovers of the one lab id (see Down).
func DownLab(log *slog.Logger, id string) error {
	if labID(id) != id {
		return fmt.Errorf("invalid lab id %q", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, kerr := killRecorded(filepath.Join(StateRoot, id, "pids"))
	err := errors.Join(kerr, removeLeftovers(ctx, id))
	if log != nil {
		log.Info("removed lab", "lab", id, "killed", n, "err", err)
	}
	return err
}

// leftoverIDs collects lab ids from state dirs, netns, cgroups and pins.
func leftoverIDs() ([]string, error) {
	set := map[string]bool{}
	var errs []error
	add := func(dir string, idOf func(string) string) {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("list %s: %w", dir, err))
		}
		for _, e := range entries {
			if id := idOf(e.Name()); id != "" {
				set[id] = true
			}
		}
	}
	add(StateRoot, labID)
	add(netnsDir, labID)
	add(BPFRoot, labID)
	if root, err := CgroupRoot(); err == nil {
		add(root, labID)
	}
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, errors.Join(errs...)
}

// labID returns the lab id a name belongs to ("amlab-1a2b3c-n1" ->
// "amlab-1a2b3c"), or "" if it is not a lab name.
func labID(name string) string {
	if !strings.HasPrefix(name, Prefix) || len(name) < len(Prefix)+6 {
		return ""
	}
	id := name[:len(Prefix)+6]
	for _, c := range id[len(Prefix):] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return ""
		}
	}
	if len(name) > len(id) && name[len(id)] != '-' {
		return ""
	}
	return id
}
