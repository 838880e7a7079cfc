package meshlab

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/agentmesh/agentmesh/test/lab"
)

// runDown is `meshlab down`: remove the leftovers of every lab.
func runDown(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "log each step")
	only := fs.String("lab", "", "remove only this lab id (default: every lab, running or not)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *only != "" {
		if err := lab.DownLab(newLogger(*verbose), *only); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed: %s\n", *only)
		return nil
	}
	ids, err := lab.Down(newLogger(*verbose))
	switch {
	case len(ids) == 0 && err == nil:
		fmt.Fprintln(stdout, "nothing to remove")
	case len(ids) > 0:
		fmt.Fprintf(stdout, "removed: %s\n", strings.Join(ids, ", "))
	}
	return err
}
