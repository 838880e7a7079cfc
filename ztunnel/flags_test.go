package ztunnel

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/api/mesh"
	"github.com/agentmesh/agentmesh/ztunnel/detect"
)

func TestParseFlags(t *testing.T) {
	req := []string{"--node", "n1", "--config", "c.json", "--ca-cert", "ca.pem", "--ca-key", "ca.key"}
	o, err := parseFlags(req, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.pinDir != mesh.DefaultPinDir || o.agentdSocket != mesh.DefaultAgentdSocket || o.certLifetime != 24*time.Hour ||
		o.adminAddr != "127.0.0.1:15000" || o.metricsAddr != ":15020" || o.readyAddr != ":15021" ||
		o.log.Format != "json" || o.log.Level != slog.LevelInfo {
		t.Errorf("defaults: %+v", o)
	}
	if o.detect.Timeout != time.Second || !slices.Equal(o.detect.OpaquePorts, detect.DefaultOpaquePorts) || !o.sameNodeFastPath || !o.callerAddress {
		t.Errorf("defaults: detect %+v, same-node fast path %v", o.detect, o.sameNodeFastPath)
	}
	if o.recentRequests != 512 {
		t.Errorf("default --recent-requests %d, want 512", o.recentRequests)
	}
	if o, err = parseFlags(append(req, "--recent-requests", "0"), &bytes.Buffer{}); err != nil || o.recentRequests != 0 {
		t.Errorf("--recent-requests 0: %+v, %v", o, err)
	}
	o, err = parseFlags(append(req, "--opaque-ports", " 3306, 9000 ", "--protocol-detect-timeout", "0"), &bytes.Buffer{})
	if err != nil || !slices.Equal(o.detect.OpaquePorts, []uint16{3306, 9000}) || o.detect.Timeout != 0 {
		t.Errorf("detect overrides: %+v, %v", o.detect, err)
	}
	if o, err = parseFlags(append(req, "--opaque-ports="), &bytes.Buffer{}); err != nil || len(o.detect.OpaquePorts) != 0 {
		t.Errorf("--opaque-ports= : %+v, %v", o.detect, err)
	}
	o, err = parseFlags(append(req, "--log-level", "debug", "--log-format", "text", "--cert-lifetime", "1h"), &bytes.Buffer{})
	if err != nil || o.log.Level != slog.LevelDebug || o.log.Format != "text" || o.certLifetime != time.Hour {
		t.Errorf("overrides: %+v, %v", o, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing required flags: --node, --config, --ca-cert, --ca-key"},
		{append(req, "--log-format", "xml"), "--log-format"},
		{append(req, "--log-level", "loud"), "log-level"},
		{append(req, "--cert-lifetime", "-1h"), "positive"},
		{append(req, "extra"), "unexpected arguments"},
		{append(req, "--opaque-ports", "80,http"), `port "http"`},
		{append(req, "--opaque-ports", "0"), `port "0"`},
		{append(req, "--protocol-detect-timeout", "-1s"), "must not be negative"},
		{append(req, "--recent-requests", "-1"), "--recent-requests must not be negative"},
	} {
		if _, err := parseFlags(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%v) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestRunHelpAndErrors(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, &out); err != nil || !strings.Contains(out.String(), "--agentd-socket") && !strings.Contains(out.String(), "-agentd-socket") {
		t.Errorf("Run -h = %v, usage %q", err, out.String())
	}
	err := Run(context.Background(), []string{"--node", "n1", "--config", "c.json", "--ca-cert", "/nonexistent", "--ca-key", "/nonexistent"}, &out)
	if err == nil || !strings.Contains(err.Error(), "load local ca") {
		t.Errorf("Run with a missing CA = %v", err)
	}
}

// TestParseFlagsModes: exactly one mode, with all of its flags and none of
// the other's.
func TestParseFlagsModes(t *testing.T) {
	kube := []string{"--node", "n1", "--controller", "ctl:15012", "--controller-ca", "ca.pem", "--token-file", "tok"}
	o, err := parseFlags(kube, &bytes.Buffer{})
	if err != nil || !o.mode.Kubernetes() || o.mode.Controller != "ctl:15012" || o.mode.ControllerCA != "ca.pem" || o.mode.TokenFile != "tok" || o.mode.ControllerServerName != "" {
		t.Fatalf("kubernetes mode: %+v, %v", o, err)
	}
	o, err = parseFlags(append(kube, "--controller-server-name", "controller.agentmesh-system.svc"), &bytes.Buffer{})
	if err != nil || o.mode.ControllerServerName != "controller.agentmesh-system.svc" {
		t.Fatalf("--controller-server-name: %+v, %v", o, err)
	}
	standalone := []string{"--node", "n1", "--config", "c.json", "--ca-cert", "ca.pem", "--ca-key", "ca.key"}
	if o, err := parseFlags(standalone, &bytes.Buffer{}); err != nil || o.mode.Kubernetes() {
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
