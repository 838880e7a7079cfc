package boundaries

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestTreeKeepsBoundaries checks every package of the module (their own
// imports, not their tests').
func TestTreeKeepsBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", Module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		imports[f[0]] = f[1:]
	}
	if len(imports) < 20 {
		t.Fatalf("go list found %d packages: %s", len(imports), out)
	}
	for _, v := range Violations(imports) {
		t.Errorf("import boundary broken: %s", v)
	}
}

func TestViolations(t *testing.T) {
	m := func(p string) string { return Module + "/" + p }
	for _, tc := range []struct {
		from, to string
		bad      bool
	}{
		{"ztunnel/pods", "controller/view", true},
		{"ztunnel", "agentd/loader", true},
		{"agentd", "ztunnel/hbone", true},
		{"controller/stream", "ztunnel/identity", true},
		{"internal/configclient", "ztunnel", true},
		{"internal/pki", "bpf", true},
		{"api/meshconfig", "internal/netns", true},
		{"api/meshconfig", "api/policy", false},
		{"ztunnel", "api/policy", false},
		{"ztunnel", "internal/netns", false},
		{"ztunnel", "bpf", false},
		{"agentd/loader", "bpf", false},
		{"bpf", "api/mesh", false},
		{"bpf", "internal/netns", true},
		{"controller", "test/lab/kubecp", true},
		{"cmd/meshctl", "test/lab", true},
		{"cmd/meshlab", "test/lab/meshlab", false},
		{"test/lab", "ztunnel/hbone", false},
		{"cmd/ztunnel", "ztunnel", false},
		{"ztunnel", "cmd/ztunnel", true},
		{"test/lab", "cmd/meshlab", true},
		{"cmd/meshctl", "controller/debug", false},
	} {
		got := Violations(map[string][]string{m(tc.from): {m(tc.to), "net/http"}})
		if (len(got) > 0) != tc.bad {
			t.Errorf("%s -> %s: violations %q, want bad=%v", tc.from, tc.to, got, tc.bad)
		}
		if tc.bad && !slices.ContainsFunc(got, func(v string) bool { return strings.HasPrefix(v, tc.from+" imports "+tc.to+": ") }) {
			t.Errorf("%s -> %s: %q does not name the import", tc.from, tc.to, got)
		}
	}
}
