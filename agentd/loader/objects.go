package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/cilium/ebpf"
)

// loadObjects loads the programs with the maps pinned under pinDir where
// they exist, and pins the maps that did not.
func loadObjects(pinDir string, log *slog.Logger) (*bpf.Objects, error) {
	specs, err := bpf.MapSpecs()
	if err != nil {
		return nil, err
	}
	existing := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range existing {
			m.Close()
		}
	}()
	for name := range specs {
		m, err := ebpf.LoadPinnedMap(bpf.MapPin(pinDir, name), nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		existing[name] = m
	}
	objs, err := bpf.Load(existing)
	if err != nil {
		return nil, fmt.Errorf("load (if a pinned map is incompatible, run cleanup): %w", err)
	}
	for name, n := range objs.Smaller {
		log.Warn("pinned map of an older version holds fewer entries: the node's pods are capped by it until its pins are removed (agentd cleanup) and agentd starts again",
			"map", name, "max_entries", n, "this_version", specs[name].MaxEntries)
	}
	for name, m := range objs.Maps {
		if existing[name] != nil {
			log.Debug("reusing pinned map", "map", name)
			continue
		}
		if err := m.Pin(bpf.MapPin(pinDir, name)); err != nil {
			return nil, errors.Join(fmt.Errorf("pin map %s: %w", name, err), objs.Close())
		}
	}
	return objs, nil
}

// pinPrograms (re)pins every program under progs/, replacing old pins.
func (d *Datapath) pinPrograms() error {
	for name, p := range d.objs.Programs {
		if err := pinProgram(p, bpf.ProgPin(d.pinDir, name)); err != nil {
			return fmt.Errorf("pin program %s: %w", name, err)
		}
	}
	return nil
}

// pinProgram pins p at path, replacing an old pin.
func pinProgram(p *ebpf.Program, path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove old program pin: %w", err)
	}
	return p.Pin(path)
}
