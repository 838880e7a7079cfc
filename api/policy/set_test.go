package policy

import (
	"slices"
	"testing"
)

func TestSetAll(t *testing.T) {
	if n := len(slices.Collect(Set[string]{}.All())); n != 0 {
		t.Errorf("unconstrained set yields %d members", n)
	}
	got := slices.Sorted(SetOf("b", "a", "b").All())
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("All = %v, want [a b]", got)
	}
	for range SetOf("x", "y").All() {
		break // stopping early must not panic
	}
}
