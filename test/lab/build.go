package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Commands is what BuildBinaries builds.
var Commands = []string{"./cmd/agentd", "./cmd/ztunnel", "./cmd/meshlab", "./cmd/controller", "./cmd/meshctl"}

// BuildBinaries builds agentd, ztunnel, meshlab and controller into dir, from the
// module root found with `go env GOMOD`. Tests call it from TestMain.
func BuildBinaries(ctx context.Context, dir string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make bin dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("bin dir: %w", err)
	}
	args := append([]string{"build", "-o", abs + string(filepath.Separator)}, Commands...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// ModuleRoot is the directory of the go.mod of the current module.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a go module")
	}
	return filepath.Dir(mod), nil
}
