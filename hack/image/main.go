// Command image builds the runtime image without a Docker engine: for each
// platform a static binary, cross-compiled, in one layer with the CA
// certificates and a passwd entry for UID 1001 (the runtime stage of the
// Dockerfile, FROM scratch: no shell, no package manager), the OCI labels,
// and a multi-platform index, written as an OCI image layout that crane,
// skopeo or podman can push ("skopeo copy oci:DIR:REF docker://REF"). Beside
// it, an SPDX 2.3 SBOM of the modules linked into the binary.
//
// With -git-sync it builds git-sync's image instead (the Dockerfile's
// git-sync target): the same layer on top of one of Debian's git,
// openssh-client and what they depend on, fetched with the host's apt for
// each platform and unpacked without maintainer scripts; the SBOM then
// lists the Debian packages too.
//
// Usage: go run ./hack/image [-git-sync] -out DIR -ref REPOSITORY:TAG -version V -commit C
package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
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

// kind is what sets one image apart from the other.
type kind struct {
	title, description string
	cmd                []string
	path               string
	// debian are the Debian packages (with what they depend on) below the
	// binary's layer; none for the runtime image.
	debian []string
	// values is where the chart names the image's repository.
	values []string
}

var (
	runtimeImage = kind{
		title:       "cluster-backup",
		description: "Always-on backup of a Kubernetes cluster: one YAML file per object in S3-compatible storage",
		cmd:         []string{"run"},
		path:        "/usr/local/bin",
		values:      []string{"image"},
	}
	gitSyncImage = kind{
		title:       "cluster-backup-git",
		description: "cluster-backup git-sync: the backup's versions as Git commits, with Debian's git and ssh client",
		cmd:         []string{"git-sync"},
		path:        "/usr/local/bin:/usr/bin:/bin",
		debian:      []string{"git", "openssh-client", "dash", "base-files", "netbase"},
		values:      []string{"gitSync", "image"},
	}
)

func main() {
	out := flag.String("out", "bin/image", "directory of the OCI layout (oci/) and the SBOM")
	ref := flag.String("ref", "", "the image reference recorded in the layout (default: the chart's image.repository:appVersion)")
	version := flag.String("version", "dev", "version stamped into the binary and the labels")
	commit := flag.String("commit", "unknown", "commit stamped into the binary and the labels")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH")
	gitSync := flag.Bool("git-sync", false, "build git-sync's image (with Debian's git) rather than the runtime image")
	flag.Parse()
	k := runtimeImage
	if *gitSync {
		k = gitSyncImage
	}
	if *ref == "" {
		var err error
		if *ref, err = chartRef("charts/cluster-backup", k); err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
	}
	if err := build(*out, *ref, *version, *commit, strings.Split(*platforms, ","), k); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(out, ref, version, commit string, platforms []string, k kind) error {
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
	var sbomDebian []debPackage
	for i, platform := range platforms {
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
		var base []byte
		if len(k.debian) > 0 {
			var pkgs []debPackage
			if base, pkgs, err = debian(out, goarch, k.debian, created); err != nil {
				return err
			}
			if i == 0 {
				sbomDebian = pkgs
			}
		}
		img, err := image(k, bin, ca, base, goos, goarch, version, commit, created)
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
	sbom, err := spdx(sbomFrom, ref, version, created, sbomDebian)
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

// chartRef is the image the chart runs by default: the repository of the
// kind's image in its values and, the tag being empty there, its
// appVersion.
func chartRef(chart string, k kind) (string, error) {
	var values map[string]any
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
	for _, key := range k.values {
		values, _ = values[key].(map[string]any)
	}
	repository, _ := values["repository"].(string)
	tag, _ := values["tag"].(string)
	if tag == "" {
		tag = meta.AppVersion
	}
	if repository == "" || tag == "" {
		return "", fmt.Errorf("%s: no %s.repository or appVersion", chart, strings.Join(k.values, "."))
	}
	return repository + ":" + tag, nil
}

// debian is the layer of the kind's Debian packages for one architecture,
// and the packages in it.
func debian(out, arch string, names []string, created time.Time) ([]byte, []debPackage, error) {
	dir, err := os.MkdirTemp(out, "apt-"+arch+"-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	debs, err := fetchDebian(dir, arch, names)
	if err != nil {
		return nil, nil, err
	}
	return debianLayer(debs, created)
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

// image is one platform's image: the binary's layer (on top of base, when
// there is one), UID 1001, the labels.
func image(k kind, bin string, ca, base []byte, goos, goarch, version, commit string, created time.Time) (v1.Image, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfs(binary, ca, created)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	layers := []struct {
		tar []byte
		by  string
	}{{base, "hack/image: Debian " + strings.Join(k.debian, ", ") + " and what they depend on"},
		{layerTar, "hack/image: " + binaryPath + ", CA certificates, UID 1001"}}
	for _, l := range layers {
		if l.tar == nil {
			continue
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(l.tar)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: l.by,
		}}); err != nil {
			return nil, err
		}
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
		Cmd:          k.cmd,
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Env:          []string{"PATH=" + k.path, "SSL_CERT_FILE=" + caBundle},
		Labels: map[string]string{
			"org.opencontainers.image.title":       k.title,
			"org.opencontainers.image.description": k.description,
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
// library, each with its package URL; and of the Debian packages under
// it, if any.
func spdx(bin, ref, version string, created time.Time, debs []debPackage) ([]byte, error) {
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
	for i, d := range debs {
		id := fmt.Sprintf("SPDXRef-Package-deb-%d", i)
		pkgs = append(pkgs, pkg{Name: d.Name, SPDXID: id, Version: d.Version, DownloadLocation: "NOASSERTION",
			ExternalRefs: []externalRef{{Category: "PACKAGE-MANAGER", Type: "purl",
				Locator: "pkg:deb/debian/" + d.Name + "@" + url.PathEscape(d.Version) + "?arch=" + d.Arch}}})
		rels = append(rels, relationship{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: id})
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
