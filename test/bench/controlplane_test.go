package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseControlPlaneFlags(t *testing.T) {
	o, err := parseFlags([]string{"--data-path=false", "--cp-nodes", "3", "--cp-namespaces", "2", "--cp-services", "10",
		"--cp-pods", "100", "--cp-changes", "4", "--cp-debounce", "50ms", "--policy=false", "--policy-nodes", "2", "--policy-rounds", "3",
		"--services=false", "--svc-connect-duration", "2s", "--svc-concurrency", "4"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	f := o.cpFlags
	if f.dataPath || !f.controlPlane || f.cp.Nodes != 3 || f.cp.Namespaces != 2 || f.cp.Services != 10 ||
		f.cp.Pods != 100 || f.cp.Changes != 4 || f.cp.Debounce != 50*time.Millisecond ||
		f.policy || f.pol.Nodes != 2 || f.pol.Rounds != 3 ||
		f.services || f.svc.ConnectDuration != 2*time.Second || f.svc.Concurrency != 4 {
		t.Errorf("flags: %+v", f)
	}
	d, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if f := d.cpFlags; !f.dataPath || !f.controlPlane || f.cp.Nodes != 10 || f.cp.Services != 100 || f.cp.Pods != 2000 || f.cp.Changes != 20 ||
		!f.policy || f.pol.Nodes != 3 || f.pol.Rounds != 10 ||
		!f.services || f.svc.ConnectDuration != 5*time.Second || f.svc.Concurrency != 8 {
		t.Errorf("defaults: %+v", f)
	}
}
