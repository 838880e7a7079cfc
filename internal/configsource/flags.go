package configsource

import (
	"flag"
	"fmt"
	"strings"
)

// Flags are the flags every node component takes to name its node and
// choose its mode: standalone (--config) or Kubernetes (--controller and
// the connection flags). Register them, parse, then Check.
type Flags struct {
	Node       string
	ConfigPath string // standalone mode: the mesh config file
	// Kubernetes mode: the controller and how to reach it.
	Controller           string
	ControllerCA         string
	TokenFile            string
	ControllerServerName string

	own Component // set by Register
}

// Component is what one component adds to the mode flags.
type Component struct {
	// Standalone are the component's own flags that standalone mode needs
	// and Kubernetes mode refuses (ztunnel's local CA). Register registers
	// them; Check checks them with --config.
	Standalone []StringFlag
	// FromController is what Kubernetes mode takes from the controller
	// instead of the standalone flags, for the error that refuses them
	// ("the config").
	FromController string
	// ControllerNote ends the help of --controller.
	ControllerNote string
}

// StringFlag is a string flag: its name without dashes, help and value.
type StringFlag struct {
	Name, Usage string
	Value       *string
}

// Register adds the mode flags and c's standalone flags to fs.
func (f *Flags) Register(fs *flag.FlagSet, c Component) {
	f.own = c
	replaces := []string{"--config"}
	for _, s := range c.Standalone {
		fs.StringVar(s.Value, s.Name, "", s.Usage)
		replaces = append(replaces, "--"+s.Name)
	}
	fs.StringVar(&f.Node, "node", "", "name of this node (required)")
	fs.StringVar(&f.ConfigPath, "config", "", "standalone mode: mesh config file (JSON), polled every 500ms")
	fs.StringVar(&f.Controller, "controller", "", fmt.Sprintf("Kubernetes mode: controller address host:port (replaces %s)%s",
		strings.Join(replaces, ", "), c.ControllerNote))
	fs.StringVar(&f.ControllerCA, "controller-ca", "", "Kubernetes mode: PEM roots that verify the controller")
	fs.StringVar(&f.TokenFile, "token-file", "", "Kubernetes mode: file with this pod's bound ServiceAccount token (re-read on every call)")
	fs.StringVar(&f.ControllerServerName, "controller-server-name", "", "Kubernetes mode: name to verify in the controller's certificate (default: the host of --controller)")
}

// Kubernetes reports whether the flags choose Kubernetes mode
// (--controller): the config comes from the controller. Otherwise the
// component runs standalone on the --config file.
func (f *Flags) Kubernetes() bool { return f.Controller != "" }
