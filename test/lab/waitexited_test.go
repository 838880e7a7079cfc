package lab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/freeport"
)

// TestWaitExitedSocketsClosed: once WaitExited returns for a killed Go
// program (many threads), its listening socket is gone: a connect is
// refused, never accepted and then reset. The leader thread turns zombie
// before the other threads have let go of the process's files, so
// stopping at the zombie alone lost this race now and then.
func TestWaitExitedSocketsClosed(t *testing.T) {
	for i := range 20 {
		addrs, err := freeport.Addrs(netip.MustParseAddr("127.0.0.1"), 1)
		if err != nil {
			t.Fatal(err)
		}
		addr := addrs[0]
		cmd := exec.Command(os.Args[0], "lab-helper", "echo", addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reaped := make(chan error, 1)
		go func() { reaped <- cmd.Wait() }()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-reaped
				t.Fatalf("helper never listened on %s: %v", addr, err)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = WaitExited(ctx, cmd.Process.Pid)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			<-reaped
			t.Fatalf("round %d: %s accepted a connection after WaitExited returned", i, addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("round %d: dial after exit: %v, want connection refused", i, err)
		}
		<-reaped
	}
}
