package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/template"

	"sigs.k8s.io/yaml"
)

// krewManifest is the part of krew's Plugin schema (v1alpha2) the index
// validates.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest renders the krew manifest as krew-release-bot does for
// a tag and checks what krew's index requires: the schema's fields, a
// plugin named so that krew's link kubectl-NAME is the name the binary
// speaks as, every platform the release builds with its archive for that
// platform and tag, and the binary inside it.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile("../../.krew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const tag = "v1.2.3"
	tmpl, err := template.New("krew").Funcs(template.FuncMap{
		"addURIAndSha": func(uri, tag string) string {
			uri = strings.ReplaceAll(uri, "{{ .TagName }}", tag)
			return fmt.Sprintf("uri: %s\n    sha256: %x", uri, sha256.Sum256([]byte(uri)))
		},
	}).Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, map[string]string{"TagName": tag}); err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.UnmarshalStrict(out.Bytes(), &m); err != nil {
		t.Fatalf("the rendered manifest is not krew's Plugin schema: %v\n%s", err, out.String())
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" {
		t.Errorf("apiVersion %q kind %q", m.APIVersion, m.Kind)
	}
	if got := binaryName("/home/u/.krew/bin/kubectl-" + m.Metadata.Name); got != "kubectl "+m.Metadata.Name {
		t.Errorf("krew links the plugin as kubectl-%s, which the binary calls %q", m.Metadata.Name, got)
	}
	if m.Spec.Version != tag || m.Spec.Homepage == "" || m.Spec.Description == "" ||
		m.Spec.ShortDescription == "" || len(m.Spec.ShortDescription) > 80 {
		t.Errorf("version %q homepage %q short description %q (at most 80 characters), description %q",
			m.Spec.Version, m.Spec.Homepage, m.Spec.ShortDescription, m.Spec.Description)
	}
	platforms := map[string]bool{}
	for _, p := range m.Spec.Platforms {
		osArch := p.Selector.MatchLabels["os"] + "_" + p.Selector.MatchLabels["arch"]
		platforms[osArch] = true
		if !strings.HasSuffix(p.URI, "_"+tag+"_"+osArch+".tar.gz") || !strings.Contains(p.URI, "/download/"+tag+"/") || len(p.SHA256) != 64 {
			t.Errorf("%s: uri %q sha256 %q: want the %s archive of %s", osArch, p.URI, p.SHA256, osArch, tag)
		}
		if p.Bin != "cluster-backup" {
			t.Errorf("%s: bin %q, want cluster-backup", osArch, p.Bin)
		}
	}
	for _, want := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"} {
		if !platforms[want] {
			t.Errorf("no platform %s", want)
		}
	}
}
