package agentd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// PluginType is the CNI type of the AgentMesh plugin (cmd/agentmesh-cni),
// also its binary's name in the CNI bin directory.
const PluginType = "agentmesh-cni"

// cniInstall keeps the AgentMesh CNI plugin in the node's CNI
// configuration while agentd runs: the binary in binDir, and an entry at
// the end of the primary network's plugin chain that names the gate's
// socket. The primary network is the configuration file the runtime uses:
// the first .conf, .conflist or .json in confDir by name.
type cniInstall struct {
	confDir, binDir string
	src             string // the plugin binary to install
	socket          string // the gate's socket as the host (the plugin) sees it
	log             *slog.Logger
}

// errNoConflist: the primary network has no plugin list to chain into.
var errNoConflist = errors.New("no CNI network configuration list to chain into")

// ensure installs the binary if it differs and adds the plugin's entry if
// the primary network lacks it (its CNI may have rewritten the file). It
// reports whether it changed anything.
func (c *cniInstall) ensure() (bool, error) {
	bin, err := c.ensureBinary()
	if err != nil {
		return false, err
	}
	path, err := c.primary()
	if err != nil {
		return bin, err
	}
	conf, plugins, err := readConflist(path)
	if err != nil {
		return bin, err
	}
	entry := map[string]any{"type": PluginType, "socket": c.socket}
	if i := slices.IndexFunc(plugins, isOurs); i >= 0 {
		if i == len(plugins)-1 && plugins[i]["socket"] == c.socket {
			return bin, nil
		}
		plugins = slices.Delete(plugins, i, i+1)
	}
	conf["plugins"] = append(plugins, entry)
	if err := writeAtomic(path, conf); err != nil {
		return bin, err
	}
	c.log.Info("CNI gate chained into the node's CNI configuration", "file", path, "socket", c.socket)
	return true, nil
}

// remove takes the plugin's entry out of every configuration list in
// confDir: without agentd nothing answers it, and a pod would not start.
func (c *cniInstall) remove() error {
	files, err := confFiles(c.confDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, path := range files {
		conf, plugins, err := readConflist(path)
		if err != nil || !slices.ContainsFunc(plugins, isOurs) {
			continue
		}
		conf["plugins"] = slices.DeleteFunc(plugins, isOurs)
		if err := writeAtomic(path, conf); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("CNI gate taken out of the node's CNI configuration", "file", path)
	}
	return errors.Join(errs...)
}

func isOurs(p map[string]any) bool { return p["type"] == PluginType }

// primary returns the configuration file the runtime uses.
func (c *cniInstall) primary() (string, error) {
	files, err := confFiles(c.confDir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%w: %s has no network configuration yet", errNoConflist, c.confDir)
	}
	if !strings.HasSuffix(files[0], ".conflist") {
		return "", fmt.Errorf("%w: the primary network %s is a single plugin, not a .conflist", errNoConflist, files[0])
	}
	return files[0], nil
}

// confFiles lists confDir's network configuration files by name, as
// libcni does.
func confFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			if e.Type().IsRegular() {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// readConflist reads a configuration list, keeping every field.
func readConflist(path string) (map[string]any, []map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read CNI configuration: %w", err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, nil, fmt.Errorf("CNI configuration %s: %w", path, err)
	}
	raw, ok := conf["plugins"].([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s has no plugins list", errNoConflist, path)
	}
	plugins := make([]map[string]any, 0, len(raw))
	for _, p := range raw {
		m, ok := p.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("CNI configuration %s: a plugin that is not an object", path)
		}
		plugins = append(plugins, m)
	}
	return conf, plugins, nil
}

// writeAtomic replaces path with conf through a file the runtime ignores
// (no configuration suffix) and a rename, so it never reads half a file.
func writeAtomic(path string, conf map[string]any) error {
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CNI configuration: %w", err)
	}
	tmp := path + ".agentmesh-tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace CNI configuration: %w", err)
	}
	return nil
}

// ensureBinary copies src into binDir unless the same bytes are there; a
// rename replaces it, so a plugin running at that moment is unaffected.
func (c *cniInstall) ensureBinary() (bool, error) {
	want, err := os.ReadFile(c.src)
	if err != nil {
		return false, fmt.Errorf("CNI plugin binary: %w", err)
	}
	dst := filepath.Join(c.binDir, PluginType)
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		return false, nil
	}
	tmp, err := os.CreateTemp(c.binDir, "."+PluginType+"-*")
	if err != nil {
		return false, fmt.Errorf("install CNI plugin: %w", err)
	}
	_, err = io.Copy(tmp, bytes.NewReader(want))
	err = errors.Join(err, tmp.Chmod(0o755), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return false, fmt.Errorf("install CNI plugin: %w", err)
	}
	c.log.Info("CNI plugin installed", "path", dst)
	return true, nil
}

// keep ensures the installation now and every interval until ctx is done,
// then removes the plugin's entry. A failure is logged when it changes.
func (c *cniInstall) keep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	for {
		_, err := c.ensure()
		switch {
		case err != nil && err.Error() != last:
			c.log.Warn("CNI gate not chained into the node's CNI configuration: new pods start uncaptured and are captured once the config gives their address", "err", err)
			last = err.Error()
		case err == nil:
			last = ""
		}
		select {
		case <-ctx.Done():
			if err := c.remove(); err != nil {
				c.log.Error("cannot take the CNI gate out of the node's CNI configuration: pods cannot start on this node until agentd runs again", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// cniEnsureInterval is how often agentd checks that the plugin is still
// chained (the node's CNI may rewrite its configuration).
const cniEnsureInterval = 5 * time.Second

// newCNIInstall is the installation that o asks for.
func newCNIInstall(o *options, log *slog.Logger) (*cniInstall, error) {
	src := o.cniPlugin
	if src == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the CNI plugin next to agentd: %w", err)
		}
		src = filepath.Join(filepath.Dir(self), PluginType)
	}
	return &cniInstall{confDir: o.cniConfDir, binDir: o.cniBinDir, src: src,
		socket: cmp.Or(o.cniPluginSocket, o.cniSocket), log: log}, nil
}
