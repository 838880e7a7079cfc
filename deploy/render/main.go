// Command render renders the AgentMesh Helm chart without a helm binary,
// with the Helm Go SDK: it lints the chart, renders it and writes the
// manifests as one YAML stream, or (-check) fails when that file is stale.
//
//	render -chart ../charts/agentmesh -values manifests-values.yaml -out ../manifests/agentmesh.yaml [-check]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

// errStale is the -check failure.
var errStale = errors.New("stale")

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stdout)
	chartDir := fs.String("chart", "../charts/agentmesh", "chart directory")
	valuesFile := fs.String("values", "", "YAML file of values over the chart's values.yaml")
	release := fs.String("release", "agentmesh", "release name")
	namespace := fs.String("namespace", "agentmesh-system", "release namespace")
	out := fs.String("out", "", "file to write (empty: stdout)")
	check := fs.Bool("check", false, "do not write: fail if -out differs from a fresh render")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check && *out == "" {
		return errors.New("-check needs -out")
	}
	overrides, err := readValues(*valuesFile)
	if err != nil {
		return err
	}
	if err := Lint(*chartDir, *namespace, overrides); err != nil {
		return err
	}
	got, err := Render(*chartDir, *release, *namespace, overrides)
	if err != nil {
		return err
	}
	switch {
	case *check:
		old, err := os.ReadFile(*out)
		if err != nil {
			return fmt.Errorf("read %s: %w", *out, err)
		}
		if !bytes.Equal(old, got) {
			return fmt.Errorf("%s is %w: run make manifests and commit it", *out, errStale)
		}
		return nil
	case *out == "":
		_, err := stdout.Write(got)
		return err
	default:
		return os.WriteFile(*out, got, 0o644)
	}
}
