// Package boundaries checks the dependency direction of the module's
// packages (ARCHITECTURE.md, "Components"): cmd -> {agentd, ztunnel,
// controller} -> {api, internal, bpf}. The components meet only in api/;
// internal/ is plumbing that imports no component; nothing shipped imports
// test/. Only the packages' own imports count: tests may cross the lines
// (a ztunnel test may run an in-process controller).
package boundaries

import (
	"fmt"
	"slices"
	"strings"
)

// Module is the module path the rules speak of.
const Module = "github.com/agentmesh/agentmesh"

// rule forbids the packages under from (module-relative path prefix; ""
// is the whole module), but those under exempt, to import packages under
// deny, but those under allow.
type rule struct {
	from   string
	exempt []string
	deny   []string
	allow  []string
	why    string
}

// rules, one row each. cmd/meshlab is the lab's command (the simulated
// cluster, the demo, the benchmark, the soak): test tooling that lives in
// cmd/ because `make build` ships it next to the others, so it may import
// test/; no other main may.
var rules = []rule{
	{from: "api", deny: []string{""}, allow: []string{"api"},
		why: "api/ is the leaf contract: it imports nothing of ours outside api/"},
	{from: "internal", deny: []string{"agentd", "ztunnel", "controller", "cmd", "test", "bpf", "deploy"},
		why: "internal/ is small plumbing: it imports no component"},
	{from: "bpf", deny: []string{""}, allow: []string{"bpf", "api"},
		why: "bpf/ holds the eBPF objects and their bindings: it imports only api/"},
	{from: "controller", deny: []string{"ztunnel", "agentd"},
		why: "the controller meets the node components only in api/"},
	{from: "ztunnel", deny: []string{"controller", "agentd"},
		why: "ztunnel meets the controller and agentd only in api/"},
	{from: "agentd", deny: []string{"controller", "ztunnel"},
		why: "agentd meets the controller and ztunnel only in api/"},
	{from: "", exempt: []string{"test", "cmd/meshlab"}, deny: []string{"test"},
		why: "product code never imports test/ (only the lab's own command, cmd/meshlab, does)"},
	{from: "", exempt: []string{"cmd"}, deny: []string{"cmd"},
		why: "mains are thin and nothing imports them"},
}

// under reports whether module-relative path p is prefix or below it ("" is
// the whole module).
func under(p, prefix string) bool {
	return prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/")
}

func underAny(p string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(prefix string) bool { return under(p, prefix) })
}

// Violations lists, sorted, every import in imports (package -> its
// imports, full paths) that breaks a rule: "ztunnel/x imports
// controller/y: the controller meets ... in api/".
func Violations(imports map[string][]string) []string {
	var out []string
	for pkg, imps := range imports {
		from, ok := relative(pkg)
		if !ok {
			continue
		}
		for _, imp := range imps {
			to, ok := relative(imp)
			if !ok || to == from {
				continue
			}
			for _, r := range rules {
				if under(from, r.from) && !underAny(from, r.exempt) && underAny(to, r.deny) && !underAny(to, r.allow) {
					out = append(out, fmt.Sprintf("%s imports %s: %s", from, to, r.why))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// relative is path relative to the module, false outside it.
func relative(path string) (string, bool) {
	if path == Module {
		return "", true
	}
	return strings.CutPrefix(path, Module+"/")
}
