package configsource

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// parse registers Flags for a component with the given standalone flags
// (ztunnel's shape: a local CA) and parses args.
func parse(t *testing.T, standalone []string, args ...string) (*Flags, error) {
	t.Helper()
	f := &Flags{}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := Component{FromController: "config and certificates"}
	for _, name := range standalone {
		c.Standalone = append(c.Standalone, StringFlag{Name: name, Usage: "standalone mode: " + name, Value: new(string)})
	}
	f.Register(fs, c)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f, f.Check()
}

func TestRegister(t *testing.T) {
	f := &Flags{}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var ca string
	f.Register(fs, Component{Standalone: []StringFlag{{Name: "ca-cert", Usage: "the CA", Value: &ca}}, ControllerNote: "; a note"})
	if got := fs.Lookup("controller").Usage; got != "Kubernetes mode: controller address host:port (replaces --config, --ca-cert); a note" {
		t.Errorf("--controller usage %q", got)
	}
	err := fs.Parse([]string{"--node", "n1", "--ca-cert", "ca.pem", "--controller", "c:1", "--controller-ca", "r.pem",
		"--token-file", "tok", "--controller-server-name", "c.svc", "--config", "m.json"})
	got := []string{f.Node, f.ConfigPath, f.Controller, f.ControllerCA, f.TokenFile, f.ControllerServerName, ca}
	if err != nil || !slices.Equal(got, []string{"n1", "m.json", "c:1", "r.pem", "tok", "c.svc", "ca.pem"}) || !f.Kubernetes() {
		t.Errorf("parsed %+v, ca %q, %v", f, ca, err)
	}
}
