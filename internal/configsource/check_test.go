package configsource

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestCheck: exactly one mode, with --node and all of its flags and none
// of the other's; a ModeError names every refused or missing flag.
func TestCheck(t *testing.T) {
	kube := []string{"--node", "n1", "--controller", "ctl:15012", "--controller-ca", "ca.pem", "--token-file", "tok"}
	ca := []string{"ca-cert", "ca-key"}
	for _, tc := range []struct {
		name       string
		standalone []string // the component's own standalone flags
		args       []string
		refused    []string
		missing    []string
		want       string // the error, "" for none
	}{
		{"kubernetes", ca, kube, nil, nil, ""},
		{"kubernetes, server name", ca, append(kube, "--controller-server-name", "x"), nil, nil, ""},
		{"standalone", ca, []string{"--node", "n1", "--config", "c", "--ca-cert", "a", "--ca-key", "b"}, nil, nil, ""},
		{"standalone, no flags of its own", nil, []string{"--node", "n1", "--config", "c"}, nil, nil, ""},
		{"nothing", ca, nil, nil, []string{"--node", "--config", "--ca-cert", "--ca-key"},
			"missing required flags: --node, --config, --ca-cert, --ca-key (standalone mode; or --controller, --controller-ca and --token-file for Kubernetes mode)"},
		{"kubernetes without node", ca, kube[2:], nil, []string{"--node"}, "missing required flags: --node (Kubernetes mode)"},
		{"kubernetes without ca and token", nil, []string{"--node", "n1", "--controller", "c"}, nil, []string{"--controller-ca", "--token-file"},
			"missing required flags: --controller-ca, --token-file (Kubernetes mode)"},
		{"kubernetes with standalone flags", ca, append(kube, "--config", "c", "--ca-key", "b"), []string{"--config", "--ca-key"}, nil,
			"--config, --ca-key cannot be used with --controller: Kubernetes mode takes config and certificates from the controller"},
		{"standalone with kubernetes flags", nil, []string{"--config", "c", "--token-file", "t", "--controller-server-name", "s"},
			[]string{"--token-file", "--controller-server-name"}, []string{"--node"},
			"--token-file, --controller-server-name only work with --controller (Kubernetes mode)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.standalone, tc.args...)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check() = %v", err)
				}
				return
			}
			var e *ModeError
			if !errors.As(err, &e) || err.Error() != tc.want {
				t.Fatalf("Check() = %v, want %q", err, tc.want)
			}
			if !slices.Equal(e.Refused, tc.refused) || !slices.Equal(e.Missing, tc.missing) ||
				e.Kubernetes != slices.Contains(tc.args, "--controller") {
				t.Errorf("ModeError %+v, want refused %q missing %q", e, tc.refused, tc.missing)
			}
		})
	}
}

// TestCheckDefaultWording: a component that does not say what Kubernetes
// mode takes from the controller gets "the config".
func TestCheckDefaultWording(t *testing.T) {
	f := &Flags{Node: "n", ConfigPath: "c", Controller: "c:1", ControllerCA: "r", TokenFile: "t"}
	if err := f.Check(); err == nil || !strings.HasSuffix(err.Error(), "Kubernetes mode takes the config from the controller") {
		t.Errorf("Check() = %v", err)
	}
}
