// Command image writes the AgentMesh OCI image (make image): one layer
// holding the static binaries agentd, agentmesh-cni, ztunnel, controller
// and meshctl in /usr/local/bin, plus /etc/passwd and /etc/group naming
// the non-root user 65532 the image runs as by default (the chart runs the node components
// as root, which eBPF and the pods' network namespaces need, and the
// controller as 65532). The same binaries and the same -created time give
// the same digest: file times, owners and modes in the layer are fixed,
// entries sorted, and the config's times are -created.
//
// It writes an OCI image layout (-out/oci) and a docker-archive tarball
// (-out/agentmesh-<tag>.tar), which docker load, ctr images import and
// kind load image-archive accept, and prints the image's reference and
// digest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		slog.Error("image", "err", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	bin := fs.String("bin", "", "directory holding the static binaries agentd, agentmesh-cni, ztunnel, controller, meshctl")
	out := fs.String("out", "", "output directory (its oci/ and the tarball are replaced)")
	chart := fs.String("chart", "", "the chart directory: the image is tagged with its values' image.repository and its appVersion")
	ref := fs.String("ref", "", "the image reference instead of the chart's (repository:tag)")
	created := fs.Int64("created", 0, "the image's creation time, Unix seconds (make image: the commit's time)")
	revision := fs.String("revision", "", "the source revision for the image's label (make image: the commit)")
	binaries := fs.String("binaries", strings.Join(Binaries, ","), "the binaries of -bin the image carries in /usr/local/bin, comma-separated")
	entrypoint := fs.String("entrypoint", "/usr/local/bin/controller", "the image's entrypoint, space-separated")
	title := fs.String("title", "", "the image's title label (\"\": agentmesh)")
	description := fs.String("description", "", "the image's description label (\"\": AgentMesh's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" || *out == "" || (*chart == "") == (*ref == "") {
		return errors.New("want -bin, -out and one of -chart or -ref")
	}
	r := *ref
	version := ""
	if *chart != "" {
		var err error
		if r, version, err = chartImage(*chart); err != nil {
			return err
		}
	} else if _, tag, ok := strings.Cut(lastPart(r), ":"); ok {
		version = tag
	}
	spec := Spec{BinDir: *bin, Ref: r, Version: version, Revision: *revision, Created: time.Unix(*created, 0).UTC(),
		Binaries: strings.Split(*binaries, ","), Entrypoint: strings.Fields(*entrypoint), Title: *title, Description: *description}
	res, err := Write(spec, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image %s\ndigest %s\noci layout %s\ntarball %s\n", res.Ref, res.Digest, res.Layout, res.Tarball)
	return nil
}

// lastPart is what follows the last "/" of a reference.
func lastPart(ref string) string { return ref[strings.LastIndex(ref, "/")+1:] }

// chartImage reads the chart's default image: values.yaml's
// image.repository and Chart.yaml's appVersion (the default tag).
func chartImage(dir string) (ref, version string, err error) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
	}
	for name, v := range map[string]any{"Chart.yaml": &chart, "values.yaml": &values} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", "", fmt.Errorf("chart: %w", err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			return "", "", fmt.Errorf("chart %s: %w", name, err)
		}
	}
	tag := values.Image.Tag
	if tag == "" {
		tag = chart.AppVersion
	}
	if values.Image.Repository == "" || tag == "" {
		return "", "", fmt.Errorf("chart %s: no image.repository or appVersion", dir)
	}
	return values.Image.Repository + ":" + tag, chart.AppVersion, nil
}
