package ztunnel

import (
	"fmt"
	"slices"
	"strings"
)

// kubernetes reports whether ztunnel runs in Kubernetes mode (--controller):
// config, trust bundle and certificates from the controller. Otherwise it
// runs standalone: config from --config, certificates from the local CA.
func (o *options) kubernetes() bool { return o.controller != "" }

// flagValue is one flag's name and value, for the mode checks.
type flagValue struct{ name, v string }

// checkMode checks that exactly one mode is configured, with every flag it
// needs and no flag of the other mode.
func (o *options) checkMode() error {
	standalone := []flagValue{{"--config", o.configPath}, {"--ca-cert", o.caCert}, {"--ca-key", o.caKey}}
	kube := []flagValue{{"--controller", o.controller}, {"--controller-ca", o.controllerCA}, {"--token-file", o.tokenFile}}
	kubeOnly := slices.Concat(kube[1:], []flagValue{{"--controller-server-name", o.controllerServerName}})
	need, forbid, mode := standalone, kubeOnly, "standalone mode"
	if o.kubernetes() {
		need, forbid, mode = kube, standalone, "Kubernetes mode"
	}
	if set := names(forbid, true); len(set) > 0 {
		if !o.kubernetes() {
			return fmt.Errorf("%s only work with --controller (Kubernetes mode)", strings.Join(set, ", "))
		}
		return fmt.Errorf("%s cannot be used with --controller: Kubernetes mode takes config and certificates from the controller", strings.Join(set, ", "))
	}
	missing := names(append([]flagValue{{"--node", o.node}}, need...), false)
	if len(missing) > 0 {
		hint := "; or --controller, --controller-ca and --token-file for Kubernetes mode"
		if o.kubernetes() {
			hint = ""
		}
		return fmt.Errorf("missing required flags: %s (%s%s)", strings.Join(missing, ", "), mode, hint)
	}
	return nil
}

// names returns the names of the flags that are set (or, with set false,
// that are empty).
func names(fs []flagValue, set bool) []string {
	var out []string
	for _, f := range fs {
		if (f.v != "") == set {
			out = append(out, f.name)
		}
	}
	return out
}
