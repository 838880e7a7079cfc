package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// PinnedMaps are the maps ztunnel uses, opened from agentd's pins.
type PinnedMaps struct {
	OrigDst     *ebpf.Map // struct tuple_key -> struct orig_addr
	Listeners   *ebpf.Map // struct listener_key -> listening socket
	DNSUpstream *ebpf.Map // struct dns_key -> struct orig_addr
}

// OpenPinnedMaps opens the maps pinned under pinDir by agentd.
func OpenPinnedMaps(pinDir string) (_ *PinnedMaps, err error) {
	p := &PinnedMaps{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for name, m := range map[string]**ebpf.Map{
		MapOrigDst: &p.OrigDst, MapListeners: &p.Listeners, MapDNSUpstream: &p.DNSUpstream,
	} {
		if *m, err = ebpf.LoadPinnedMap(MapPin(pinDir, name), nil); err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
	}
	return p, nil
}

// Close closes the maps; the pins stay.
func (p *PinnedMaps) Close() error {
	var errs []error
	for _, m := range []*ebpf.Map{p.OrigDst, p.Listeners, p.DNSUpstream} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }
