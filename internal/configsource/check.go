package configsource

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// flagValue is one flag's name (with dashes) and value.
type flagValue struct{ name, v string }

// Check checks that exactly one mode is configured, with --node and every
// flag the mode needs, and no flag of the other mode. What is wrong comes
// back as a *ModeError.
func (f *Flags) Check() error {
	standalone := []flagValue{{"--config", f.ConfigPath}}
	for _, s := range f.own.Standalone {
		standalone = append(standalone, flagValue{"--" + s.Name, *s.Value})
	}
	connect := []flagValue{{"--controller-ca", f.ControllerCA}, {"--token-file", f.TokenFile}}
	need, refuse := standalone, slices.Concat(connect, []flagValue{{"--controller-server-name", f.ControllerServerName}})
	if f.Kubernetes() {
		need, refuse = connect, standalone
	}
	e := &ModeError{Kubernetes: f.Kubernetes(), Refused: names(refuse, true),
		Missing: names(append([]flagValue{{"--node", f.Node}}, need...), false), fromController: f.own.FromController}
	if len(e.Refused) == 0 && len(e.Missing) == 0 {
		return nil
	}
	return e
}

// ModeError is a mode configured wrongly.
type ModeError struct {
	Kubernetes bool     // the flags chose Kubernetes mode (else standalone)
	Refused    []string // flags of the other mode that were given
	Missing    []string // flags the mode needs that were not given, --node first

	fromController string // Component.FromController
}

// Error names the refused flags if any, else the missing ones.
func (e *ModeError) Error() string {
	switch {
	case len(e.Refused) > 0 && e.Kubernetes:
		return fmt.Sprintf("%s cannot be used with --controller: Kubernetes mode takes %s from the controller",
			strings.Join(e.Refused, ", "), cmp.Or(e.fromController, "the config"))
	case len(e.Refused) > 0:
		return fmt.Sprintf("%s only work with --controller (Kubernetes mode)", strings.Join(e.Refused, ", "))
	case e.Kubernetes:
		return fmt.Sprintf("missing required flags: %s (Kubernetes mode)", strings.Join(e.Missing, ", "))
	}
	return fmt.Sprintf("missing required flags: %s (standalone mode; or --controller, --controller-ca and --token-file for Kubernetes mode)",
		strings.Join(e.Missing, ", "))
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
