// Command image builds the runtime image without a Docker engine: for each
// platform a static binary, cross-compiled, in one layer with the CA
// certificates and a passwd entry for UID 1001 (the runtime stage of the
// Dockerfile, FROM scratch: no shell, no package manager), the OCI labels,
// and a multi-platform index, written as an OCI image layout that crane,
// skopeo or podman can push ("skopeo copy oci:DIR:REF docker://REF"). Beside
// it, an SPDX 2.3 SBOM of the modules linked into the binary.
//
// Usage: go run ./hack/image -out DIR -ref REPOSITORY:TAG -version V -commit C
package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"
)

// The image's shape: where the binary goes and whom it runs as.
const (
	binaryPath = "/usr/local/bin/cluster-backup"
	user       = "1001:1001"
	source     = "https://github.com/cluster-backup/cluster-backup"
	caBundle   = "/etc/ssl/certs/ca-certificates.crt"
)

func main() {
	out := flag.String("out", "bin/image", "directory of the OCI layout (oci/) and the SBOM")
	ref := flag.String("ref", "", "the image reference recorded in the layout (default: the chart's image.repository:appVersion)")
	version := flag.String("version", "dev", "version stamped into the binary and the labels")
	commit := flag.String("commit", "unknown", "commit stamped into the binary and the labels")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH")
	flag.Parse()
	if *ref == "" {
		var err error
		if *ref, err = chartRef("charts/cluster-backup"); err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
	}
	if err := build(*out, *ref, *version, *commit, strings.Split(*platforms, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(out, ref, version, commit string, platforms []string) error {
	created := time.Unix(0, 0).UTC()
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		var s int64
		if _, err := fmt.Sscan(epoch, &s); err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
		}
		created = time.Unix(s, 0).UTC()
	}
	ca, err := os.ReadFile(caBundle)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(out, "oci")); err != nil {
		return err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var sbomFrom string
	for _, platform := range platforms {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(platform), "/")
		if !ok {
			return fmt.Errorf("platform %q: want OS/ARCH", platform)
		}
		bin := filepath.Join(out, "cluster-backup-"+goos+"-"+goarch)
		if err := compile(bin, goos, goarch, version, commit); err != nil {
			return err
		}
		if sbomFrom == "" {
			sbomFrom = bin
		}
		img, err := image(bin, ca, goos, goarch, version, commit, created)
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: goos, Architecture: goarch},
		}})
	}
	p, err := layout.Write(filepath.Join(out, "oci"), empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
	})); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	sbom, err := spdx(sbomFrom, ref, version, created)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "sbom.spdx.json"), sbom, 0o644); err != nil {
		return err
	}
	fmt.Printf("image: %s (%s) in %s, platforms %s; SBOM %s\n", ref, digest, filepath.Join(out, "oci"),
		strings.Join(platforms, ","), filepath.Join(out, "sbom.spdx.json"))
	return nil
}

// chartRef is the image the chart runs by default: image.repository of
// its values and, the tag being empty there, its appVersion.
func chartRef(chart string) (string, error) {
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	for file, into := range map[string]any{"values.yaml": &values, "Chart.yaml": &meta} {
		raw, err := os.ReadFile(filepath.Join(chart, file))
		if err != nil {
			return "", err
		}
		if err := yaml.Unmarshal(raw, into); err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
	}
	tag := values.Image.Tag
	if tag == "" {
		tag = meta.AppVersion
	}
	if values.Image.Repository == "" || tag == "" {
		return "", fmt.Errorf("%s: no image.repository or appVersion", chart)
	}
	return values.Image.Repository + ":" + tag, nil
}

// compile builds the static binary for one platform, as the Dockerfile does.
func compile(bin, goos, goarch, version, commit string) error {
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", version, commit),
		"-o", bin, "./cmd/cluster-backup")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s/%s: %w", goos, goarch, err)
	}
	return nil
}

// image is one platform's image: one layer, UID 1001, the labels.
func image(bin string, ca []byte, goos, goarch, version, commit string, created time.Time) (v1.Image, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfs(binary, ca, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "hack/image: " + binaryPath + ", CA certificates, UID 1001",
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = goos, goarch, v1.Time{Time: created}
	cf.Config = v1.Config{
		User:         user,
		Entrypoint:   []string{binaryPath},
		Cmd:          []string{"run"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Env:          []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + caBundle},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "cluster-backup",
			"org.opencontainers.image.description": "Always-on backup of a Kubernetes cluster: one YAML file per object in S3-compatible storage",
			"org.opencontainers.image.source":      source,
			"org.opencontainers.image.url":         source,
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    commit,
			"org.opencontainers.image.created":     created.Format(time.RFC3339),
		},
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the layer: directories, the binary, the CA bundle, and passwd
// and group entries for UID 1001, all owned by root.
func rootfs(binary, ca []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "tmp/", "usr/", "usr/local/", "usr/local/bin/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		body []byte
	}{
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\ncluster-backup:x:1001:1001:cluster-backup:/tmp:/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\ncluster-backup:x:1001:\n")},
		{strings.TrimPrefix(caBundle, "/"), 0o644, ca},
		{strings.TrimPrefix(binaryPath, "/"), 0o755, binary},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// spdx is an SPDX 2.3 document of what the binary links: the main module,
// every dependency module at the version built, and the Go standard
// library, each with its package URL.
func spdx(bin, ref, version string, created time.Time) ([]byte, error) {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("SBOM: %w", err)
	}
	type externalRef struct {
		Category string `json:"referenceCategory"`
		Type     string `json:"referenceType"`
		Locator  string `json:"referenceLocator"`
	}
	type pkg struct {
		Name             string        `json:"name"`
		SPDXID           string        `json:"SPDXID"`
		Version          string        `json:"versionInfo"`
		DownloadLocation string        `json:"downloadLocation"`
		FilesAnalyzed    bool          `json:"filesAnalyzed"`
		ExternalRefs     []externalRef `json:"externalRefs"`
	}
	type relationship struct {
		Element string `json:"spdxElementId"`
		Type    string `json:"relationshipType"`
		Related string `json:"relatedSpdxElement"`
	}
	purl := func(path, v string) []externalRef {
		return []externalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:golang/" + path + "@" + v}}
	}
	mainID := "SPDXRef-Package-main"
	pkgs := []pkg{{Name: info.Main.Path, SPDXID: mainID, Version: version, DownloadLocation: source,
		ExternalRefs: purl(info.Main.Path, version)}}
	rels := []relationship{{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: mainID}}
	add := func(i int, path, v string) {
		id := fmt.Sprintf("SPDXRef-Package-%d", i)
		pkgs = append(pkgs, pkg{Name: path, SPDXID: id, Version: v, DownloadLocation: "https://proxy.golang.org/" + path + "/@v/" + v + ".zip",
			ExternalRefs: purl(path, v)})
		rels = append(rels, relationship{Element: mainID, Type: "DEPENDS_ON", Related: id})
	}
	add(0, "stdlib", info.GoVersion)
	for i, d := range info.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		add(i+1, d.Path, d.Version)
	}
	doc := map[string]any{
		"spdxVersion":       "SPDX-2.3",
		"dataLicense":       "CC0-1.0",
		"SPDXID":            "SPDXRef-DOCUMENT",
		"name":              ref,
		"documentNamespace": source + "/spdx/" + strings.NewReplacer(":", "-", "/", "-").Replace(ref),
		"creationInfo": map[string]any{
			"created":  created.Format(time.RFC3339),
			"creators": []string{"Tool: cluster-backup hack/image"},
		},
		"packages":      pkgs,
		"relationships": rels,
	}
	return json.MarshalIndent(doc, "", "  ")
}
