package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary double as the workload run inside pods:
// `<test binary> lab-helper echo ADDR` or `... dial ADDR PAYLOAD`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "lab-helper" {
		if err := helper(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Binaries built for the mesh tests, once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds agentd, ztunnel and meshlab once and returns their dir.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "amlab-test-bin")
		if buildErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			buildErr = BuildBinaries(ctx, binDir)
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binDir
}

// helper runs one helper mode.
func helper(mode string, args []string) error {
	switch {
	case mode == "echo" && len(args) == 1:
		return helperEcho(args[0])
	case mode == "dial" && len(args) == 2:
		return helperDial(args[0], args[1])
	}
	return fmt.Errorf("bad helper args %q %q", mode, args)
}

// helperEcho echoes every connection on addr (v4 and v6) until killed.
func helperEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// helperDial sends payload+"\n" to addr and prints the line echoed back.
func helperDial(addr, payload string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, payload); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Print(line)
	return nil
}
