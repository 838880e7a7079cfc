package deployment

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestContainerArgs runs every container's command of the manifest with
// its args and -h appended: the binary parses each flag (an unknown flag or
// a bad value fails) and stops at -h with status 0. A renamed flag in
// agentd, ztunnel or the controller fails here, not on a cluster.
func TestContainerArgs(t *testing.T) {
	dir := t.TempDir()
	buildBinaries(t.Context(), t, dir, "agentd", "ztunnel", "controller")
	checked := 0
	for _, u := range readManifests(t) {
		if u.GetKind() != "Deployment" && u.GetKind() != "DaemonSet" {
			continue
		}
		tmpl, _, err := unstructured.NestedMap(u.Object, "spec", "template")
		var spec corev1.PodTemplateSpec
		if err == nil {
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &spec)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		for _, c := range spec.Spec.Containers {
			checked++
			if err := parseOnly(dir, c, "-h"); err != nil {
				t.Errorf("%s %s container %s: %v", u.GetKind(), u.GetName(), c.Name, err)
			}
			// The control: the same with an unknown flag must fail.
			if err := parseOnly(dir, c, "--no-such-flag", "-h"); err == nil {
				t.Errorf("%s: an unknown flag was accepted; the check above proves nothing", c.Name)
			}
		}
	}
	if checked != 3 {
		t.Errorf("checked %d containers, want 3 (controller, agentd, ztunnel)", checked)
	}
}

// parseOnly runs the container's command from dir with its args ($(NODE_NAME)
// replaced by a sample) and extra appended.
func parseOnly(dir string, c corev1.Container, extra ...string) error {
	if len(c.Command) != 1 {
		return fmt.Errorf("command %q: want one binary name", c.Command)
	}
	args := make([]string, 0, len(c.Args)+len(extra))
	for _, a := range c.Args {
		args = append(args, strings.ReplaceAll(a, "$(NODE_NAME)", "node-a"))
	}
	out, err := exec.Command(filepath.Join(dir, c.Command[0]), append(args, extra...)...).CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return errors.Join(err, errors.New(lines[len(lines)-1]))
	}
	return nil
}
