package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// helperArg makes the test binary double as the benchmark client and
// server inside lab pods: `<test binary> bench-helper bench-client ...`.
const helperArg = "bench-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == helperArg {
		if err := helper(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(sub string, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch sub {
	case ClientCommand:
		return Client(ctx, args, os.Stdout)
	case ServerCommand:
		return Server(ctx, args)
	}
	return fmt.Errorf("unknown helper %q", sub)
}
