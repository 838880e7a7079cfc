package kubelet

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "PORT": "8080"}
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{":$(PORT)", ":8080"},
		{"$(A)$(A)", "11"},
		{"$(MISSING)", "$(MISSING)"},
		{"$$(A)", "$(A)"},
		{"$(unclosed", "$(unclosed"},
		{"trailing$", "trailing$"},
		{"$", "$"},
		{"$x", "$x"},
	} {
		if got := expand(tc.in, vars); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzExpand(f *testing.F) {
	f.Add("$(A)$$x$(")
	f.Fuzz(func(t *testing.T, s string) {
		_ = expand(s, map[string]string{"A": "1"})
	})
}

func TestCommandResolvesBinDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "meshlab"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{opts: Options{BinDir: dir}}
	for _, tc := range []struct {
		c    corev1.Container
		want []string
	}{
		{corev1.Container{Command: []string{"meshlab", "app"}, Args: []string{"echo"}}, []string{filepath.Join(dir, "meshlab"), "app", "echo"}},
		{corev1.Container{Command: []string{"/bin/x"}}, []string{"/bin/x"}},
		{corev1.Container{Command: []string{"sh"}}, []string{"/usr/bin/sh"}},
	} {
		got, err := k.command(&tc.c, nil)
		if err != nil {
			t.Errorf("command %q: %v", tc.c.Command, err)
			continue
		}
		if !slices.Equal(got, tc.want) && !(tc.c.Command[0] == "sh" && got[0] == "/bin/sh") {
			t.Errorf("command %q = %q, want %q", tc.c.Command, got, tc.want)
		}
	}
	if _, err := k.command(&corev1.Container{}, nil); err == nil {
		t.Error("no command: no error")
	}
}
