package bpf

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
)

// Objects are all loaded AgentMesh programs and maps. Programs are keyed by
// their pin names (ProgConnect4, ...), maps by their map names.
type Objects struct {
	Programs map[string]*ebpf.Program
	Maps     map[string]*ebpf.Map
	// Smaller names the existing maps used although they hold fewer
	// entries than this version makes (pinned by an older agentd, whose
	// pods' state they carry), with their capacity. New pins get the
	// full size once the old ones are gone (agentd cleanup, a reboot).
	Smaller map[string]uint32
}

// MaxPods is the number of enrolled pods a node's maps hold (MAX_PODS in
// common.h).
const MaxPods = 16384

// specs returns the collection specs of every object file. Maps with the
// same name (stats) are one map shared by all of them.
func specs() ([]*ebpf.CollectionSpec, error) {
	capture, err := loadCapture()
	if err != nil {
		return nil, err
	}
	steer, err := loadSteer()
	if err != nil {
		return nil, err
	}
	dns, err := loadDns()
	if err != nil {
		return nil, err
	}
	return []*ebpf.CollectionSpec{capture, steer, dns}, nil
}

// programNames maps ELF program names to pin names.
var programNames = map[string]string{
	captureProgConnect4:    ProgConnect4,
	captureProgConnect6:    ProgConnect6,
	captureProgSockOps:     ProgSockOps,
	steerProgSteerInbound:  ProgSkLookup,
	dnsProgDnsConnect4:     ProgDNSConnect4,
	dnsProgDnsConnect6:     ProgDNSConnect6,
	dnsProgDnsSendmsg4:     ProgDNSSendmsg4,
	dnsProgDnsSendmsg6:     ProgDNSSendmsg6,
	dnsProgDnsRecvmsg4:     ProgDNSRecvmsg4,
	dnsProgDnsRecvmsg6:     ProgDNSRecvmsg6,
	dnsProgDnsGetpeername4: ProgDNSGetpeername4,
	dnsProgDnsGetpeername6: ProgDNSGetpeername6,
}

// MapSpecs returns the specs of all maps by name.
func MapSpecs() (map[string]*ebpf.MapSpec, error) {
	all, err := specs()
	if err != nil {
		return nil, err
	}
	out := map[string]*ebpf.MapSpec{}
	for _, s := range all {
		maps.Copy(out, s.Maps)
	}
	return out, nil
}

// Load loads all programs. Maps found in existing (by name, for example
// the pinned maps of an earlier run) are used when compatible with the
// spec; the others are created. Load returns its own handles (existing
// maps are cloned), so the caller keeps ownership of existing.
func Load(existing map[string]*ebpf.Map) (_ *Objects, err error) {
	all, err := specs()
	if err != nil {
		return nil, err
	}
	o := &Objects{Programs: map[string]*ebpf.Program{}, Maps: map[string]*ebpf.Map{}, Smaller: map[string]uint32{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.Close())
		}
	}()
	mspecs, err := MapSpecs()
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(mspecs)) {
		m, err := openMap(mspecs[name], existing[name])
		if err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
		if n := m.MaxEntries(); n < mspecs[name].MaxEntries {
			o.Smaller[name] = n
		}
		o.Maps[name] = m
	}
	for _, s := range all {
		if err := o.loadPrograms(s); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// openMap makes a map of spec, or clones existing when it is compatible
// with spec or differs only in holding fewer entries (an older version's
// pin, whose entries are the node's live state: it stays in use).
func openMap(spec *ebpf.MapSpec, existing *ebpf.Map) (*ebpf.Map, error) {
	if existing == nil {
		return ebpf.NewMap(spec)
	}
	if err := spec.Compatible(existing); err != nil {
		older := spec.Copy()
		older.MaxEntries = existing.MaxEntries()
		if older.MaxEntries > spec.MaxEntries || older.Compatible(existing) != nil {
			return nil, fmt.Errorf("existing map: %w", err)
		}
	}
	return existing.Clone()
}

// fitReplacements sets the capacity of every map of s that repl replaces
// to the replacement's (an older, smaller pin that openMap took).
func fitReplacements(s *ebpf.CollectionSpec, repl map[string]*ebpf.Map) {
	for name, m := range repl {
		if ms := s.Maps[name]; ms != nil && m.MaxEntries() < ms.MaxEntries {
			ms.MaxEntries = m.MaxEntries()
		}
	}
}

func (o *Objects) loadPrograms(s *ebpf.CollectionSpec) error {
	repl := map[string]*ebpf.Map{}
	for name := range s.Maps {
		repl[name] = o.Maps[name]
	}
	fitReplacements(s, repl)
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return fmt.Errorf("load programs: %w", err)
	}
	for elfName, p := range coll.Programs {
		name, ok := programNames[elfName]
		if !ok {
			name = elfName
		}
		o.Programs[name] = p
		delete(coll.Programs, elfName)
	}
	coll.Close() // the cloned maps
	return nil
}

// Close closes all programs and maps (pins stay).
func (o *Objects) Close() error {
	var errs []error
	for _, p := range o.Programs {
		errs = append(errs, p.Close())
	}
	for _, m := range o.Maps {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}
