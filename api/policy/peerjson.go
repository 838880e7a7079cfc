package policy

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/agentmesh/agentmesh/api/spiffe"
)

// peerJSON is Peer on the wire: a nil list is an unconstrained set.
type peerJSON struct {
	Identities *[]string `json:"identities,omitempty"`
	Namespaces *[]string `json:"namespaces,omitempty"`
	Workloads  *[]string `json:"workloads,omitempty"`
	IPBlocks   []IPBlock `json:"ipBlocks,omitempty"`
}

// MarshalJSON writes p in its wire form.
func (p Peer) MarshalJSON() ([]byte, error) {
	return json.Marshal(peerJSON{
		Identities: setList(p.Identities, spiffe.ID.String),
		Namespaces: setList(p.Namespaces, func(s string) string { return s }),
		Workloads:  setList(p.Workloads, func(s string) string { return s }),
		IPBlocks:   p.IPBlocks,
	})
}

// UnmarshalJSON reads p from its wire form.
func (p *Peer) UnmarshalJSON(b []byte) error {
	var w peerJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	ids, err := listSet(w.Identities, spiffe.Parse)
	if err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	ident := func(s string) (string, error) { return s, nil }
	ns, _ := listSet(w.Namespaces, ident)
	wl, _ := listSet(w.Workloads, ident)
	*p = Peer{Identities: ids, Namespaces: ns, Workloads: wl, IPBlocks: w.IPBlocks}
	return nil
}

// setList is s as a sorted list, nil when s is unconstrained.
func setList[T comparable](s Set[T], str func(T) string) *[]string {
	if s.Any() {
		return nil
	}
	out := make([]string, 0, len(s.members))
	for v := range s.members {
		out = append(out, str(v))
	}
	slices.Sort(out)
	return &out
}

// listSet is the set of l's parsed elements, unconstrained when l is nil.
func listSet[T comparable](l *[]string, parse func(string) (T, error)) (Set[T], error) {
	if l == nil {
		return Set[T]{}, nil
	}
	vs := make([]T, 0, len(*l))
	for _, s := range *l {
		v, err := parse(s)
		if err != nil {
			return Set[T]{}, err
		}
		vs = append(vs, v)
	}
	return SetOf(vs...), nil
}
