package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// New creates a network namespace and returns the only handle to it: the
// namespace goes away when every copy of the handle is closed (and nothing
// else, such as a bind mount or a process, holds it). No thread is left in
// it: the creating thread returns to its namespace, or dies if it cannot.
func New() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("unshare netns: %w", err)}
			return
		}
		f, ferr := os.Open("/proc/thread-self/ns/net")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			if f != nil {
				f.Close()
			}
			ch <- result{err: fmt.Errorf("return to original netns: %w", err)} // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		if ferr != nil {
			ferr = fmt.Errorf("open new netns: %w", ferr)
		}
		ch <- result{f, ferr}
	}()
	r := <-ch
	return r.f, r.err
}
