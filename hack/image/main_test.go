package main

import (
	"archive/tar"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestImage builds the image for both platforms and reads it back as a
// registry or a runtime would: the index names the reference the chart
// runs by default; each platform's image runs as UID 1001, has no shell,
// starts the binary, carries the OCI labels; the binary taken out of the
// image for this machine runs (version), the other is built for its
// architecture; the SBOM lists the modules the binary links at the
// versions go.mod requires.
func TestImage(t *testing.T) {
	out := t.TempDir()
	t.Chdir("../..")
	ref, err := chartRef("charts/cluster-backup", runtimeImage)
	if err != nil {
		t.Fatal(err)
	}
	buildImage(t, out, ref)

	if !strings.HasPrefix(ref, "ghcr.io/cluster-backup/cluster-backup:") {
		t.Errorf("the chart's image %q", ref)
	}
	images := imagesOf(t, filepath.Join(out, "oci"), ref)
	platforms := map[string]bool{}
	for arch, img := range images {
		platforms["linux/"+arch] = true
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch || cf.OS != "linux" {
			t.Errorf("%s: config says %s/%s", arch, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "1001:1001" {
			t.Errorf("%s: user %q, want 1001:1001", arch, cf.Config.User)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/cluster-backup" || strings.Join(cf.Config.Cmd, " ") != "run" {
			t.Errorf("%s: entrypoint %q cmd %q", arch, cf.Config.Entrypoint, cf.Config.Cmd)
		}
		for label, want := range map[string]string{
			"org.opencontainers.image.title":    "cluster-backup",
			"org.opencontainers.image.version":  "v9.8.7",
			"org.opencontainers.image.revision": "0123abc",
			"org.opencontainers.image.source":   "https://github.com/cluster-backup/cluster-backup",
		} {
			if got := cf.Config.Labels[label]; got != want {
				t.Errorf("%s: label %s = %q, want %q", arch, label, got, want)
			}
		}
		if _, err := time.Parse(time.RFC3339, cf.Config.Labels["org.opencontainers.image.created"]); err != nil {
			t.Errorf("%s: label created: %v", arch, err)
		}
		files := filesOf(t, img)
		for name := range files {
			if strings.HasSuffix(name, "/sh") || strings.HasSuffix(name, "/bash") || strings.HasSuffix(name, "/busybox") {
				t.Errorf("%s: the image holds a shell: %s", arch, name)
			}
		}
		if !strings.Contains(string(files["etc/passwd"]), ":1001:1001:") || len(files["etc/ssl/certs/ca-certificates.crt"]) == 0 {
			t.Errorf("%s: no passwd entry for 1001 or no CA bundle", arch)
		}
		bin := filepath.Join(out, "from-image-"+arch)
		if err := os.WriteFile(bin, files["usr/local/bin/cluster-backup"], 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: the binary in the image: %v", arch, err)
		}
		machine := f.Machine
		_ = f.Close()
		if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; machine != want {
			t.Errorf("%s: the binary is built for %v", arch, machine)
		}
		if arch == runtime.GOARCH {
			got, err := exec.Command(bin, "version").Output()
			if err != nil || !strings.HasPrefix(string(got), "cluster-backup v9.8.7 (commit 0123abc") {
				t.Errorf("%s: the binary taken out of the image: %v %q", arch, err, got)
			}
		}
	}
	if !platforms["linux/amd64"] || !platforms["linux/arm64"] {
		t.Errorf("platforms %v", platforms)
	}

	var sbom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name    string `json:"name"`
			Version string `json:"versionInfo"`
		} `json:"packages"`
		Relationships []struct {
			Type string `json:"relationshipType"`
		} `json:"relationships"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "sbom.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &sbom); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, p := range sbom.Packages {
		listed[p.Name] = p.Version
	}
	if sbom.SPDXVersion != "SPDX-2.3" || listed["stdlib"] == "" || len(sbom.Relationships) != len(sbom.Packages) {
		t.Errorf("SBOM: version %q, stdlib %q, %d relationships for %d packages", sbom.SPDXVersion, listed["stdlib"], len(sbom.Relationships), len(sbom.Packages))
	}
	for _, module := range []string{"k8s.io/client-go", "github.com/minio/minio-go/v7", "go.uber.org/zap"} {
		want := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(module) + ` (\S+)`).FindStringSubmatch(string(gomod))
		if want == nil || listed[module] != want[1] {
			t.Errorf("SBOM lists %s at %q; go.mod requires %v", module, listed[module], want)
		}
	}
}

// filesOf reads every regular file of an image's layers.
func filesOf(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(h.Name, "/")] = body
			if h.Typeflag == tar.TypeSymlink {
				files[h.Name] = []byte(h.Linkname)
			}
		}
		rc.Close()
	}
	return files
}

// buildImage builds the image for both platforms, version v9.8.7 and
// commit 0123abc, as make image does: in a process of its own, so that
// compressing the layers is not slowed down by the race detector of the
// test binary.
func buildImage(t *testing.T, out, ref string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "./hack/image", "-out", out, "-ref", ref, "-version", "v9.8.7", "-commit", "0123abc",
		"-platforms", "linux/amd64,linux/arm64"}, flags...)
	if got, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, got)
	}
}
