package bpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// PinnedMaps are the maps ztunnel uses, opened from agentd's pins.
type PinnedMaps struct {
	OrigDst     *ebpf.Map // struct tuple_key -> struct orig_addr
	Listeners   *ebpf.Map // struct listener_key -> listening socket
	DNSUpstream *ebpf.Map // struct dns_key -> struct orig_addr
	// Deliveries (struct delivery_key -> u8) is nil when agentd pinned
	// none (a version before deliveries from the caller's address).
	Deliveries *ebpf.Map
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
	p.Deliveries, err = ebpf.LoadPinnedMap(MapPin(pinDir, MapDeliveries), nil)
	if errors.Is(err, os.ErrNotExist) {
		p.Deliveries, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", MapDeliveries, err)
	}
	return p, nil
}

// Close closes the maps; the pins stay.
func (p *PinnedMaps) Close() error {
	var errs []error
	for _, m := range []*ebpf.Map{p.OrigDst, p.Listeners, p.DNSUpstream, p.Deliveries} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }
