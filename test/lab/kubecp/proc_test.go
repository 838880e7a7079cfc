package kubecp

import "testing"

func TestParseStat(t *testing.T) {
	fields := " 1 1 1 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 8 0 123456 1000 200"
	for _, tc := range []struct {
		name, in  string
		start     uint64
		state     byte
		wantError bool
	}{
		{"plain", "42 (etcd) S" + fields, 123456, 'S', false},
		{"name with spaces and parens", "42 (a) b (c) Z" + fields, 123456, 'Z', false},
		{"no paren", "42 etcd S" + fields, 0, 0, true},
		{"short", "42 (etcd) S 1 1", 0, 0, true},
		{"bad start", "42 (etcd) S 1 1 1 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 8 0 x 1000", 0, 0, true},
	} {
		start, state, err := parseStat(tc.in)
		if (err != nil) != tc.wantError || start != tc.start || state != tc.state {
			t.Errorf("%s: got (%d, %q, %v), want (%d, %q, error=%v)", tc.name, start, state, err, tc.start, tc.state, tc.wantError)
		}
	}
}
