package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/agentmesh/agentmesh/internal/bpffs"
)

// BPFFSPath is where bpffs is mounted when it is not yet.
const BPFFSPath = bpffs.Path

// ensureBPFFS mounts bpffs at BPFFSPath unless it is mounted there.
func ensureBPFFS(log *slog.Logger) error {
	mounted, err := bpffs.Ensure()
	if mounted {
		log.Info("mounted bpffs", "path", BPFFSPath)
	}
	return err
}

// FindCgroup2Root returns the mount point of the cgroup v2 hierarchy from
// /proc/self/mountinfo.
func FindCgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2: %w", err)
	}
	defer f.Close()
	return cgroup2FromMountinfo(bufio.NewScanner(f))
}

func cgroup2FromMountinfo(s *bufio.Scanner) (string, error) {
	for s.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype src superopts
		fields := strings.Fields(s.Text())
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				if fields[i+1] == "cgroup2" && len(fields) > 4 {
					return unescapeMount(fields[4]), nil
				}
				break
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", errors.New("find cgroup2: not mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// Cleanup removes every pin under pinDir and pinDir itself. Links whose pin
// was the last reference detach; maps and programs are freed.
func Cleanup(pinDir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(pinDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("cleanup %s: %w", pinDir, err)
	}
	log.Info("removed pins", "pin_dir", pinDir)
	return nil
}
