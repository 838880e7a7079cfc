package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// PinnedMaps are the maps ztunnel uses, opened from agentd's pins.
type PinnedMaps struct {
	OrigDst   *ebpf.Map // struct tuple_key -> struct orig_addr
	Listeners *ebpf.Map // struct listener_key -> listening socket
}

// OpenPinnedMaps opens the maps pinned under pinDir by agentd.
func OpenPinnedMaps(pinDir string) (*PinnedMaps, error) {
	od, err := ebpf.LoadPinnedMap(MapPin(pinDir, MapOrigDst), nil)
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", MapOrigDst, err)
	}
	ls, err := ebpf.LoadPinnedMap(MapPin(pinDir, MapListeners), nil)
	if err != nil {
		od.Close()
		return nil, fmt.Errorf("open pinned map %s: %w", MapListeners, err)
	}
	return &PinnedMaps{OrigDst: od, Listeners: ls}, nil
}

// Close closes both maps; the pins stay.
func (p *PinnedMaps) Close() error {
	return errors.Join(p.OrigDst.Close(), p.Listeners.Close())
}

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }
