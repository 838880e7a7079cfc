package lab

import (
	"testing"

	"github.com/cilium/ebpf"
)

func TestCountKeys(t *testing.T) {
	requireLab(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: 16})
	if err != nil {
		t.Fatalf("create map: %v", err)
	}
	defer m.Close()
	for want := range 4 {
		if n, err := countKeys(m); err != nil || n != want {
			t.Fatalf("count = %d, %v; want %d", n, err, want)
		}
		if err := m.Put(uint64(want+100), uint8(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Delete(uint64(101)); err != nil {
		t.Fatal(err)
	}
	if n, err := countKeys(m); err != nil || n != 3 {
		t.Errorf("after a delete: count = %d, %v; want 3", n, err)
	}
}
