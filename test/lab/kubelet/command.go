package kubelet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// defaultPath is the PATH a container gets unless its spec sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// command is the container's command line: command then args, $(VAR)
// expanded from the container's env, args[0] resolved in BinDir first
// ("meshlab" -> BinDir/meshlab), then in PATH.
func (k *Kubelet) command(c *corev1.Container) ([]string, error) {
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) == 0 {
		return nil, errors.New("container has no command (the lab runs no images)")
	}
	vars := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			vars[e.Name] = e.Value
		}
	}
	for i, a := range args {
		args[i] = expand(a, vars)
	}
	if strings.Contains(args[0], "/") {
		return args, nil
	}
	if k.opts.BinDir != "" {
		if p := filepath.Join(k.opts.BinDir, args[0]); isFile(p) {
			args[0] = p
			return args, nil
		}
	}
	p, err := exec.LookPath(args[0])
	if err != nil {
		return nil, fmt.Errorf("find command: %w", err)
	}
	args[0] = p
	return args, nil
}

// isFile reports whether p is a regular file.
func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// expand replaces $(NAME) with vars[NAME] (unknown names stay as they
// are) and $$ with $, as Kubernetes does for command and args.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case s[i+1] == '$':
			b.WriteByte('$')
			i++
		case s[i+1] == '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				if v, ok := vars[s[i+2:i+2+end]]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
			b.WriteByte('$')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// env is the container's environment: PATH and HOSTNAME, then its env
// entries; valueFrom supports the downward API's fieldRef.
func (w *worker) env(c *corev1.Container) []string {
	env := []string{"PATH=" + defaultPath, "HOSTNAME=" + w.pod.Name}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var ok bool
			if v, ok = w.fieldRef(e.ValueFrom); !ok {
				w.log.Warn("unsupported env valueFrom", "container", c.Name, "env", e.Name)
				continue
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// fieldRef resolves a downward-API field.
func (w *worker) fieldRef(src *corev1.EnvVarSource) (string, bool) {
	if src.FieldRef == nil {
		return "", false
	}
	p := w.pod
	switch path := src.FieldRef.FieldPath; path {
	case "metadata.name":
		return p.Name, true
	case "metadata.namespace":
		return p.Namespace, true
	case "metadata.uid":
		return string(p.UID), true
	case "spec.nodeName":
		return p.Spec.NodeName, true
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, true
	case "status.podIP", "status.podIPs", "status.hostIP":
		return w.ipField(path), true
	}
	return "", false
}

// ipField is the value of status.podIP(s) or status.hostIP.
func (w *worker) ipField(path string) string {
	var ips []string
	if path == "status.hostIP" {
		if len(w.k.opts.Addresses) > 0 {
			return w.k.opts.Addresses[0].String()
		}
		return ""
	}
	if w.sandbox != nil {
		for _, ip := range w.sandbox.IPs() {
			ips = append(ips, ip.String())
		}
	}
	if path == "status.podIP" && len(ips) > 0 {
		return ips[0]
	}
	return strings.Join(ips, ",")
}
