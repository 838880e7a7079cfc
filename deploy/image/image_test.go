package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fakeBins writes a small file for each binary.
func fakeBins(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range Binaries {
		if err := os.WriteFile(filepath.Join(dir, b), []byte(content+b), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestReproducible: two builds of the same binaries and time have one
// digest, whatever the files' own times and modes; another binary or
// time changes it; the tarball and the OCI layout hold that image.
func TestReproducible(t *testing.T) {
	created := time.Unix(1764900000, 0).UTC()
	spec := func(bin string, at time.Time) Spec {
		return Spec{BinDir: bin, Ref: "ghcr.io/agentmesh/agentmesh:0.1.0", Version: "0.1.0", Revision: "abc", Created: at}
	}
	a, b := fakeBins(t, "x"), fakeBins(t, "x")
	os.Chtimes(filepath.Join(b, "ztunnel"), time.Now(), time.Now().Add(-time.Hour))
	os.Chmod(filepath.Join(b, "agentd"), 0o755)
	out1, out2 := t.TempDir(), t.TempDir()
	r1, err := Write(spec(a, created), out1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Write(spec(b, created), out2)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Digest != r2.Digest {
		t.Errorf("same inputs, digests %s and %s", r1.Digest, r2.Digest)
	}
	for what, s := range map[string]Spec{"another binary": spec(fakeBins(t, "y"), created), "another time": spec(a, created.Add(time.Second))} {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := img.Digest(); d == r1.Digest {
			t.Errorf("%s: the same digest", what)
		}
	}

	tb, err := tarball.ImageFromPath(r1.Tarball, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A docker archive keeps the config and the layers (its manifest is
	// docker's, made up when read).
	img1, _ := Build(spec(a, created))
	want, _ := img1.ConfigName()
	if got, err := tb.ConfigName(); err != nil || got != want {
		t.Errorf("tarball image config %s (%v), want %s", got, err, want)
	}
	p, err := layout.FromPath(r1.Layout)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest != r1.Digest ||
		im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "ghcr.io/agentmesh/agentmesh:0.1.0" {
		t.Errorf("oci layout index %+v %v, want the image named by its reference", im, err)
	}
	if !strings.HasSuffix(r1.Tarball, "agentmesh-0.1.0.tar") {
		t.Errorf("tarball %s", r1.Tarball)
	}
}

// TestContents: the config runs as the non-root user with the binaries
// on PATH and the labels; the layer holds the binaries (0755, root-owned,
// at the creation time) and the user database.
func TestContents(t *testing.T) {
	created := time.Unix(1764900000, 0).UTC()
	img, err := Build(Spec{BinDir: fakeBins(t, "x"), Ref: "r/a:1", Version: "1", Revision: "abc", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || c.Env[0] != "PATH=/usr/local/bin:/usr/bin:/bin" || cf.OS != "linux" || cf.Architecture != "amd64" ||
		c.Labels["org.opencontainers.image.revision"] != "abc" || c.Labels["org.opencontainers.image.version"] != "1" || !cf.Created.Equal(created) {
		t.Errorf("config %+v", cf)
	}
	files, contents := imageFiles(t, img)
	for _, b := range Binaries {
		h := files["usr/local/bin/"+b]
		if h == nil || h.Mode != 0o755 || h.Uid != 0 || !h.ModTime.Equal(created) || contents[h.Name] != "x"+b {
			t.Errorf("binary %s: %+v", b, h)
		}
	}
	if !strings.Contains(contents["etc/passwd"], "nonroot:x:65532:65532:") || !strings.Contains(contents["etc/group"], "nonroot:x:65532:") {
		t.Errorf("user database: %q %q", contents["etc/passwd"], contents["etc/group"])
	}
	if h := files["tmp"]; h == nil || h.Mode&0o7777 != 0o1777 {
		t.Errorf("/tmp: %+v", h)
	}
}

// TestChartImage: the image is tagged as the chart's default image.
func TestChartImage(t *testing.T) {
	ref, version, err := chartImage("../charts/agentmesh")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := name.NewTag(ref, name.StrictValidation); err != nil || !strings.HasSuffix(ref, ":"+version) {
		t.Errorf("chart image %q version %q: %v", ref, version, err)
	}
}

// TestMissingBinary: a binary missing is a clear error.
func TestMissingBinary(t *testing.T) {
	dir := fakeBins(t, "x")
	os.Remove(filepath.Join(dir, "ztunnel"))
	if _, err := Build(Spec{BinDir: dir, Ref: "r/a:1"}); err == nil || !strings.Contains(err.Error(), "ztunnel") {
		t.Errorf("err %v, want one naming ztunnel", err)
	}
}

// TestOtherImage: the lab's apps image (make lab-image) carries only the
// binaries it names, with its own entrypoint and title, and is written as
// <name>-<tag>.tar.
func TestOtherImage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "meshlab"), []byte("m"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := Spec{BinDir: dir, Binaries: []string{"meshlab"}, Entrypoint: []string{"/usr/local/bin/meshlab", "app", "pause"},
		Title: "apps", Ref: "localhost/lab/apps:lab", Created: time.Unix(1764900000, 0).UTC()}
	res, err := Write(s, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.Tarball) != "apps-lab.tar" {
		t.Errorf("tarball %s, want apps-lab.tar", res.Tarball)
	}
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/usr/local/bin/meshlab app pause" || cf.Config.Labels["org.opencontainers.image.title"] != "apps" {
		t.Errorf("entrypoint %q, labels %v", got, cf.Config.Labels)
	}
	files, _ := imageFiles(t, img)
	var bins []string
	for name, h := range files {
		if strings.HasPrefix(name, "usr/local/bin/") && h.Typeflag == tar.TypeReg {
			bins = append(bins, name)
		}
	}
	if strings.Join(bins, ",") != "usr/local/bin/meshlab" {
		t.Errorf("binaries %v, want only meshlab", bins)
	}
}

// imageFiles reads img's flattened file system: each entry's header and
// content by name.
func imageFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	files := map[string]*tar.Header{}
	contents := map[string]string{}
	r := mutate.Extract(img)
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		var b bytes.Buffer
		io.Copy(&b, tr)
		contents[h.Name] = b.String()
	}
	return files, contents
}
