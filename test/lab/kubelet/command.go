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
// expanded from vars (the container's environment, downward-API values
// included), args[0] resolved in BinDir first ("meshlab" ->
// BinDir/meshlab), then in PATH.
func (k *Kubelet) command(c *corev1.Container, vars map[string]string) ([]string, error) {
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) == 0 {
		return nil, errors.New("container has no command (the lab runs no images)")
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
