package bpf

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestMapCapacity: a node's maps hold MaxPods enrolled pods: one
// enrolled_netns entry each, and four listeners (two ports, two
// families). (They held 4096 and 8192 before: 2048 dual-stack pods.)
func TestMapCapacity(t *testing.T) {
	specs, err := MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	if n := specs[MapEnrolledNetns].MaxEntries; n < MaxPods {
		t.Errorf("%s holds %d netns, want at least %d", MapEnrolledNetns, n, MaxPods)
	}
	if n := specs[MapListeners].MaxEntries; n < 4*MaxPods {
		t.Errorf("%s holds %d listeners, want at least %d (4 per pod)", MapListeners, n, 4*MaxPods)
	}
}

// TestLoadKeepsSmallerPins: maps pinned by an older version with fewer
// entries (the node's live state) are used as they are, and said so; a
// pin larger than this version's is refused.
func TestLoadKeepsSmallerPins(t *testing.T) {
	requireRoot(t)
	specs, err := MapSpecs()
	if err != nil {
		t.Fatal(err)
	}
	old := map[string]uint32{MapEnrolledNetns: 4096, MapListeners: 8192}
	existing := map[string]*ebpf.Map{}
	for name, n := range old {
		s := specs[name].Copy()
		s.MaxEntries = n
		s.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(s)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		existing[name] = m
	}
	key := uint64(42)
	if err := existing[MapEnrolledNetns].Put(key, uint8(1)); err != nil {
		t.Fatal(err)
	}
	o, err := Load(existing)
	if err != nil {
		t.Fatalf("load with older, smaller pins: %v", err)
	}
	defer o.Close()
	for name, n := range old {
		if o.Smaller[name] != n {
			t.Errorf("Smaller[%s] = %d, want %d", name, o.Smaller[name], n)
		}
	}
	var v uint8
	if err := o.Maps[MapEnrolledNetns].Lookup(key, &v); err != nil || v != 1 {
		t.Errorf("the older map's entry: %d, %v; want it kept", v, err)
	}
	if o.Programs[ProgConnect4] == nil || o.Programs[ProgSkLookup] == nil {
		t.Error("programs not loaded against the older maps")
	}

	big := specs[MapEnrolledNetns].Copy()
	big.MaxEntries = 2 * specs[MapEnrolledNetns].MaxEntries
	big.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(big)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if o2, err := Load(map[string]*ebpf.Map{MapEnrolledNetns: m}); err == nil {
		o2.Close()
		t.Error("a pin larger than this version's was used")
	} else if !strings.Contains(err.Error(), MapEnrolledNetns) {
		t.Errorf("error %v does not name the map", err)
	}
}
