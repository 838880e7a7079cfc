package loader

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/bpf"
	"github.com/agentmesh/agentmesh/internal/testutil"
)

func accelPins(pinDir string) []string {
	var out []string
	for _, m := range bpf.AccelMapNames {
		out = append(out, bpf.MapPin(pinDir, m))
	}
	for _, p := range bpf.AccelProgNames {
		out = append(out, bpf.ProgPin(pinDir, p))
	}
	return append(out, bpf.LinkPin(pinDir, bpf.ProgAccelSockOps))
}

func TestSockmapAccelOnOff(t *testing.T) {
	opts := testEnv(t)
	log, _ := testutil.NewLog(t)
	opts.Logger = log
	d := open(t, opts)
	for _, p := range accelPins(opts.PinDir) {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("without SockmapAccel: %s: %v", p, err)
		}
	}
	d.Close()

	opts.SockmapAccel = true
	d = open(t, opts)
	for _, p := range accelPins(opts.PinDir) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("pin missing: %v", err)
		}
	}
	out, err := exec.Command("bpftool", "cgroup", "show", opts.CgroupPath).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool cgroup show: %v: %s", err, out)
	}
	if !strings.Contains(string(out), bpf.ProgAccelSockOps) || strings.Count(string(out), "cgroup_sock_ops") != 2 {
		t.Errorf("cgroup lacks %s next to sockops:\n%s", bpf.ProgAccelSockOps, out)
	}
	out, err = exec.Command("bpftool", "map", "dump", "pinned", bpf.MapPin(opts.PinDir, bpf.MapAccelStats)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "accel_redirected") {
		t.Errorf("bpftool map dump of %s lacks accel_redirected: %v:\n%s", bpf.MapAccelStats, err, out)
	}
	// The shared stats map keeps its layout: the acceleration's counters
	// are not in it.
	out, err = exec.Command("bpftool", "map", "dump", "pinned", bpf.MapPin(opts.PinDir, bpf.MapStats)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "accel_") {
		t.Errorf("bpftool map dump of %s: %v:\n%s", bpf.MapStats, err, out)
	}
	if _, ok, err := d.AccelStats(); !ok || err != nil {
		t.Errorf("AccelStats with SockmapAccel: ok %t, %v", ok, err)
	}
	d.Close()
	// Reopened with the flag: the same link, updated.
	before := linkIDs(t, opts.PinDir)
	d = open(t, opts)
	if got := linkIDs(t, opts.PinDir); got[bpf.ProgAccelSockOps] != before[bpf.ProgAccelSockOps] {
		t.Errorf("accel link replaced on reopen: %v -> %v", before, got)
	}
	d.Close()

	// Off again: everything of it goes (no socket is accelerated).
	opts.SockmapAccel = false
	d = open(t, opts)
	for _, p := range accelPins(opts.PinDir) {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after turning it off: %s: %v", p, err)
		}
	}
	waitLinkGone(t, before[bpf.ProgAccelSockOps])
	if _, err := d.Stats(); err != nil {
		t.Error(err)
	}
	if _, ok, err := d.AccelStats(); ok || err != nil {
		t.Errorf("AccelStats without SockmapAccel: ok %t, %v", ok, err)
	}
}
