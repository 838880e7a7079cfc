package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Binaries are what the image carries, in /usr/local/bin.
var Binaries = []string{"agentd", "agentmesh-cni", "controller", "meshctl", "ztunnel"}

// NonRoot is the user and group the image runs as unless a pod says
// otherwise.
const NonRoot = 65532

// Spec is what an image is made of.
type Spec struct {
	BinDir   string   // holds the binaries
	Binaries []string // what it carries in /usr/local/bin (nil: Binaries)
	// Entrypoint is the image's (nil: /usr/local/bin/controller); Title
	// and Description its labels ("": AgentMesh's).
	Entrypoint         []string
	Title, Description string
	Ref                string    // repository:tag
	Version            string    // the org.opencontainers.image.version label ("" none)
	Revision           string    // the org.opencontainers.image.revision label ("" none)
	Created            time.Time // every time in the image
}

func (s Spec) binaries() []string {
	if s.Binaries == nil {
		return Binaries
	}
	return s.Binaries
}

// Result is what Write wrote.
type Result struct {
	Ref             string
	Digest          v1.Hash
	Layout, Tarball string
}

// Build makes the image of s.
func Build(s Spec) (v1.Image, error) {
	layer, err := rootLayer(s)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: s.Created}, CreatedBy: "make image", Comment: "static " + strings.Join(s.binaries(), ", ")}})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	if s.Entrypoint == nil {
		s.Entrypoint = []string{"/usr/local/bin/controller"}
	}
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: s.Created}
	labels := map[string]string{
		"org.opencontainers.image.title":       cmp.Or(s.Title, "agentmesh"),
		"org.opencontainers.image.description": cmp.Or(s.Description, "AgentMesh: the node components (agentd with its CNI plugin, ztunnel), the controller and meshctl"),
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     s.Created.Format(time.RFC3339),
	}
	if s.Version != "" {
		labels["org.opencontainers.image.version"] = s.Version
	}
	if s.Revision != "" {
		labels["org.opencontainers.image.revision"] = s.Revision
	}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		WorkingDir: "/",
		Entrypoint: s.Entrypoint,
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// rootLayer is the image's one layer: the binaries and the user database,
// in a fixed order with fixed times, owners and modes.
func rootLayer(s Spec) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: s.Created, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data io.Reader, size int64) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: s.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.Copy(tw, data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRoot)
	for _, d := range []string{"etc", "home", "home/nonroot", "root", "tmp", "usr", "usr/local", "usr/local/bin"} {
		mode := int64(0o755)
		switch d {
		case "tmp":
			mode = 0o1777
		case "root":
			mode = 0o700
		}
		if err := dir(d, mode); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	for _, f := range []struct{ name, data string }{{"etc/group", group}, {"etc/passwd", passwd}} {
		if err := file(f.name, 0o644, bytes.NewReader([]byte(f.data)), int64(len(f.data))); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	for _, b := range slices.Sorted(slices.Values(s.binaries())) {
		if err := addFile(file, filepath.Join(s.BinDir, b), "usr/local/bin/"+b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return l, nil
}

// addFile adds the executable at path as name.
func addFile(file func(string, int64, io.Reader, int64) error, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("binary %s: not a regular file", path)
	}
	if err := file(name, 0o755, f, st.Size()); err != nil {
		return fmt.Errorf("layer %s: %w", name, err)
	}
	return nil
}

// Write builds the image of s and writes it under out: an OCI image
// layout in out/oci and a docker-archive tarball out/<name>-<tag>.tar
// (the last part of the repository: agentmesh-<tag>.tar),
// both replaced.
func Write(s Spec, out string) (*Result, error) {
	ref, err := name.NewTag(s.Ref, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", s.Ref, err)
	}
	img, err := Build(s)
	if err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image digest: %w", err)
	}
	res := &Result{Ref: ref.String(), Digest: digest, Layout: filepath.Join(out, "oci"), Tarball: filepath.Join(out, lastPart(ref.RepositoryStr())+"-"+ref.TagStr()+".tar")}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("image output: %w", err)
	}
	if err := os.RemoveAll(res.Layout); err != nil {
		return nil, fmt.Errorf("image output: %w", err)
	}
	p, err := layout.Write(res.Layout, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("oci layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.String(),
		"io.containerd.image.name":          ref.String(),
	})); err != nil {
		return nil, fmt.Errorf("oci layout: %w", err)
	}
	tmp := res.Tarball + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("tarball: %w", err)
	}
	if err := os.Rename(tmp, res.Tarball); err != nil {
		return nil, fmt.Errorf("tarball: %w", err)
	}
	return res, nil
}
