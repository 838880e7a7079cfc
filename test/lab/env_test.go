package lab

import (
	"os"
	"testing"
)

// requireLab skips (or, with CI=true, fails) unless the lab can run here.
func requireLab(t *testing.T) {
	t.Helper()
	var reason string
	switch {
	case os.Geteuid() != 0:
		reason = "lab needs root"
	default:
		if _, err := CgroupRoot(); err != nil {
			reason = "lab needs cgroup2: " + err.Error()
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}
