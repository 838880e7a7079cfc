// Command gen writes the Grafana dashboard (package dashboard) to the file
// named by its argument: `make dashboards`.
package main

import (
	"fmt"
	"os"

	"github.com/agentmesh/agentmesh/internal/dashboard"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen FILE")
		os.Exit(2)
	}
	b, err := dashboard.JSON()
	if err == nil {
		err = os.WriteFile(os.Args[1], b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
