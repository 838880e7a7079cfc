package lab

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/agentmesh/agentmesh/bpf"
)

// MapEntries counts the entries of the map agentd pinned on node i under
// name (bpf.MapOrigDst, ...). The map may change while it is walked: the
// count is a snapshot's, give or take the entries that moved meanwhile.
func (l *Lab) MapEntries(i int, name string) (int, error) {
	m, err := ebpf.LoadPinnedMap(bpf.MapPin(l.pinDir(i), name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("open map %s of n%d: %w", name, i, err)
	}
	defer m.Close()
	return countKeys(m)
}

// countKeys walks m's keys. A walk that a concurrent delete sends back to
// the start is cut off at the map's size.
func countKeys(m *ebpf.Map) (int, error) {
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	var prev any // nil: the first key
	n := 0
	for n < int(m.MaxEntries()) {
		err := m.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("walk map: %w", err)
		}
		n++
		copy(key, next)
		prev = key
	}
	return n, nil
}
