// Package netns runs code inside another network namespace on a locked OS
// thread, so that no goroutine or thread is ever left in the wrong namespace.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on a locked OS thread that has joined the network namespace
// open at nsFD, and then moves the thread back. Sockets created inside fn
// stay in that namespace for their whole life and may be used from any
// goroutine afterwards. fn must not start goroutines that expect to be in
// the namespace.
//
// If the thread cannot return to its original namespace it is not unlocked,
// so the Go runtime terminates it instead of reusing it.
func Do(nsFD int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("return to original netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DoPath is Do for the namespace at path (for example /run/netns/NAME or
// /proc/PID/ns/net).
func DoPath(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	return Do(int(f.Fd()), fn)
}

// Cookie returns the kernel's cookie for the network namespace open at nsFD,
// the value bpf_get_netns_cookie returns for sockets inside it.
func Cookie(nsFD int) (uint64, error) {
	var cookie uint64
	err := Do(nsFD, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		cookie, err = SocketNetnsCookie(fd)
		return err
	})
	return cookie, err
}

// SocketNetnsCookie returns the netns cookie of the socket fd
// (SO_NETNS_COOKIE, Linux 5.14 and later).
func SocketNetnsCookie(fd int) (uint64, error) {
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return v, nil
}
