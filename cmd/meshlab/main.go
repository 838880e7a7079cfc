// Command meshlab runs AgentMesh on a cluster simulated on this machine:
// `meshlab demo`, `meshlab up`, `meshlab down`, and the sample workloads
// (`meshlab app ...`) that run inside lab pods. It needs root.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentmesh/agentmesh/test/lab/meshlab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := meshlab.Run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshlab:", err)
		if errors.Is(err, meshlab.ErrUsage) {
			fmt.Fprint(os.Stderr, meshlab.Usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}
