package ztunnel

import (
	"bytes"
	"strings"
	"testing"
)

// TestParseFlagsModes: exactly one mode, with all of its flags and none of
// the other's.
func TestParseFlagsModes(t *testing.T) {
	kube := []string{"--node", "n1", "--controller", "ctl:15012", "--controller-ca", "ca.pem", "--token-file", "tok"}
	o, err := parseFlags(kube, &bytes.Buffer{})
	if err != nil || !o.kubernetes() || o.controller != "ctl:15012" || o.controllerCA != "ca.pem" || o.tokenFile != "tok" || o.controllerServerName != "" {
		t.Fatalf("kubernetes mode: %+v, %v", o, err)
	}
	o, err = parseFlags(append(kube, "--controller-server-name", "controller.agentmesh-system.svc"), &bytes.Buffer{})
	if err != nil || o.controllerServerName != "controller.agentmesh-system.svc" {
		t.Fatalf("--controller-server-name: %+v, %v", o, err)
	}
	standalone := []string{"--node", "n1", "--config", "c.json", "--ca-cert", "ca.pem", "--ca-key", "ca.key"}
	if o, err := parseFlags(standalone, &bytes.Buffer{}); err != nil || o.kubernetes() {
		t.Fatalf("standalone mode: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node", "n1", "--controller", "ctl:15012"}, "missing required flags: --controller-ca, --token-file (Kubernetes mode)"},
		{[]string{"--controller", "ctl:15012", "--controller-ca", "ca.pem", "--token-file", "tok"}, "missing required flags: --node"},
		{append(kube, "--config", "c.json"), "--config cannot be used with --controller"},
		{append(kube, "--ca-cert", "a", "--ca-key", "b"), "--ca-cert, --ca-key cannot be used with --controller"},
		{append(standalone, "--token-file", "tok"), "--token-file only work with --controller"},
		{append(standalone, "--controller-ca", "x", "--controller-server-name", "y"), "--controller-ca, --controller-server-name only work with --controller"},
		{[]string{"--node", "n1", "--config", "c.json"}, "missing required flags: --ca-cert, --ca-key (standalone mode; or --controller"},
	} {
		if _, err := parseFlags(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}
