package bpffs

import (
	"errors"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentmesh/agentmesh/internal/testutil"
)

// TestEnsure unmounts bpffs in a mount namespace of its own (the host's
// stays as it is) and has Ensure mount it, then find it mounted.
func TestEnsure(t *testing.T) {
	testutil.RequireRoot(t, "mount namespaces and bpffs")
	errc := make(chan error, 1)
	go func() {
		// The thread leaves the host's mount namespace and never comes
		// back: it is not unlocked, so the runtime ends it.
		runtime.LockOSThread()
		errc <- ensureInPrivateNS()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func ensureInPrivateNS() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(Path, &st); err != nil {
			return err
		}
		if st.Type != unix.BPF_FS_MAGIC {
			break
		}
		if err := unix.Unmount(Path, 0); err != nil {
			return err
		}
	}
	if _, err := os.Stat(Path); err != nil {
		return err
	}
	mounted, err := Ensure()
	if err != nil {
		return err
	}
	if !mounted {
		return errors.New("Ensure did not mount bpffs where it was missing")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(Path, &st); err != nil {
		return err
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return errors.New("no bpffs after Ensure")
	}
	again, err := Ensure()
	if err != nil {
		return err
	}
	if again {
		return errors.New("Ensure mounted bpffs over a mounted one")
	}
	return nil
}
