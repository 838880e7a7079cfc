package policy

import "iter"

// Set constrains one attribute of a peer. The zero Set places no
// constraint and matches everything; a Set made by SetOf matches only its
// members (nothing when it has none, such as a selector that picks no
// namespace) and never the zero value of T (an absent attribute).
type Set[T comparable] struct {
	constrained bool
	members     map[T]struct{}
}

// SetOf is the set of vs.
func SetOf[T comparable](vs ...T) Set[T] {
	s := Set[T]{constrained: true, members: make(map[T]struct{}, len(vs))}
	for _, v := range vs {
		s.members[v] = struct{}{}
	}
	return s
}

// Any reports whether s places no constraint.
func (s Set[T]) Any() bool { return !s.constrained }

// Len is the number of members (0 for an unconstrained set).
func (s Set[T]) Len() int { return len(s.members) }

// All yields the members in no particular order (none for an unconstrained
// set), for encoders that write a set out.
func (s Set[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		for v := range s.members {
			if !yield(v) {
				return
			}
		}
	}
}

// Has reports whether v satisfies s.
func (s Set[T]) Has(v T) bool {
	if !s.constrained {
		return true
	}
	var zero T
	if v == zero {
		return false
	}
	_, ok := s.members[v]
	return ok
}

// Equal reports whether s and o place the same constraint.
func (s Set[T]) Equal(o Set[T]) bool {
	if s.constrained != o.constrained || len(s.members) != len(o.members) {
		return false
	}
	for v := range s.members {
		if _, ok := o.members[v]; !ok {
			return false
		}
	}
	return true
}
