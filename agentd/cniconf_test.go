package agentd

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const labConflist = `{"cniVersion": "1.0.0", "name": "lab", "plugins": [
  {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`

func newTestCNIInstall(t *testing.T) *cniInstall {
	t.Helper()
	dir := t.TempDir()
	c := &cniInstall{confDir: filepath.Join(dir, "net.d"), binDir: filepath.Join(dir, "bin"), src: filepath.Join(dir, "plugin"),
		socket: "/var/run/agentmesh/cni.sock", log: slog.New(slog.DiscardHandler)}
	for _, d := range []string{c.confDir, c.binDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.src, []byte("plugin v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeConf(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pluginTypes lists the types of the plugin chain in path.
func pluginTypes(t *testing.T, path string) string {
	t.Helper()
	_, plugins, err := readConflist(path)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range plugins {
		types = append(types, p["type"].(string))
	}
	return strings.Join(types, ",")
}

// TestCNIInstall: the plugin is appended to the primary network's chain
// (the first file by name) and nothing else, once; a CNI that rewrites its
// file loses nothing to ensure, which chains the plugin again at the end;
// remove restores the chain with every other field as it was.
func TestCNIInstall(t *testing.T) {
	c := newTestCNIInstall(t)
	primary, other := filepath.Join(c.confDir, "10-lab.conflist"), filepath.Join(c.confDir, "20-other.conflist")
	writeConf(t, primary, labConflist)
	writeConf(t, other, labConflist)
	if changed, err := c.ensure(); err != nil || !changed {
		t.Fatalf("ensure = %v, %v", changed, err)
	}
	if got := pluginTypes(t, primary); got != "bridge,portmap,agentmesh-cni" {
		t.Errorf("primary chain %s", got)
	}
	if got := pluginTypes(t, other); got != "bridge,portmap" {
		t.Errorf("other network's chain %s: it is not the runtime's", got)
	}
	if b, err := os.ReadFile(filepath.Join(c.binDir, PluginType)); err != nil || string(b) != "plugin v1" {
		t.Errorf("installed binary %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(c.binDir, PluginType)); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed binary mode %v, %v", st.Mode(), err)
	}
	if changed, err := c.ensure(); err != nil || changed {
		t.Errorf("second ensure = %v, %v; want no change", changed, err)
	}
	// Its CNI rewrote the file, then something chained itself after us.
	writeConf(t, primary, labConflist)
	if changed, err := c.ensure(); err != nil || !changed {
		t.Fatalf("ensure after a rewrite = %v, %v", changed, err)
	}
	conf, plugins, _ := readConflist(primary)
	conf["plugins"] = append(plugins, map[string]any{"type": "tuning"})
	if err := writeAtomic(primary, conf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ensure(); err != nil {
		t.Fatal(err)
	}
	if got := pluginTypes(t, primary); got != "bridge,portmap,tuning,agentmesh-cni" {
		t.Errorf("chain %s, want agentmesh-cni last", got)
	}
	if err := c.remove(); err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	data, _ := os.ReadFile(primary)
	json.Unmarshal(data, &got) //nolint:errcheck // checked below
	json.Unmarshal([]byte(labConflist), &want)
	want["plugins"] = append(want["plugins"].([]any), map[string]any{"type": "tuning"})
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("after remove:\n%s\nwant\n%s", g, w)
	}
	if ents, _ := os.ReadDir(c.confDir); len(ents) != 2 {
		t.Errorf("conf dir holds %d files, want the two networks only", len(ents))
	}
}

// TestCNIInstallNeedsAList: no configuration yet, or a primary network
// that is a single plugin, is an error that says so; nothing is written.
func TestCNIInstallNeedsAList(t *testing.T) {
	c := newTestCNIInstall(t)
	if _, err := c.ensure(); !errors.Is(err, errNoConflist) {
		t.Errorf("ensure with no configuration = %v", err)
	}
	writeConf(t, filepath.Join(c.confDir, "05-single.conf"), `{"cniVersion": "1.0.0", "name": "x", "type": "bridge"}`)
	writeConf(t, filepath.Join(c.confDir, "10-lab.conflist"), labConflist)
	if _, err := c.ensure(); !errors.Is(err, errNoConflist) || !strings.Contains(err.Error(), "05-single.conf") {
		t.Errorf("ensure with a single-plugin primary = %v", err)
	}
	if got := pluginTypes(t, filepath.Join(c.confDir, "10-lab.conflist")); got != "bridge,portmap" {
		t.Errorf("chain %s changed", got)
	}
}

// TestCleanupUnchains: agentd cleanup --cni-conf-dir takes the plugin out
// of the node's network (after an agentd that was killed left it there).
func TestCleanupUnchains(t *testing.T) {
	c := newTestCNIInstall(t)
	primary := filepath.Join(c.confDir, "10-lab.conflist")
	writeConf(t, primary, labConflist)
	if _, err := c.ensure(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := cleanup([]string{"--cni-conf-dir", c.confDir, "--pin-dir", filepath.Join(t.TempDir(), "none")}, &out); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out.String())
	}
	if got := pluginTypes(t, primary); got != "bridge,portmap" {
		t.Errorf("after cleanup the chain is %s", got)
	}
}
