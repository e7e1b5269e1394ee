package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func finding(osv, module, version, fixed, function string) string {
	return `{"finding":{"osv":"` + osv + `","fixed_version":"` + fixed + `","trace":[{"module":"` + module +
		`","version":"` + version + `","function":"` + function + `"}]}}`
}

func TestJudge(t *testing.T) {
	stream := strings.Join([]string{
		`{"config":{"protocol_version":"v1.0.0"}}`,
		finding("GO-1", "stdlib", "v1.26.8", "v1.26.9", "Get"),           // fixed in the image
		finding("GO-1", "stdlib", "v1.26.8", "v1.26.9", "Get"),           // reported once
		finding("GO-2", "stdlib", "v1.26.8", "v1.26.11", "Dial"),         // not fixed in the image
		finding("GO-3", "example.com/lib", "v1.0.0", "v1.0.1", "Decode"), // a module: always fails
		finding("GO-4", "example.com/other", "v1.0.0", "v1.0.1", ""),     // imported, never called
		finding("GO-5", "stdlib", "v1.26.8", "v1.26.9", ""),              // never called
	}, "\n")
	bad, accepted, err := judge(strings.NewReader(stream), "v1.26.10")
	if err != nil {
		t.Fatal(err)
	}
	if len(accepted) != 1 || !strings.HasPrefix(accepted[0], "GO-1 ") {
		t.Errorf("accepted %q", accepted)
	}
	if len(bad) != 2 || !strings.HasPrefix(bad[0], "GO-2 ") || !strings.HasPrefix(bad[1], "GO-3 ") {
		t.Errorf("bad %q", bad)
	}
}

func TestImageGo(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"# syntax\nFROM golang:1.26.10 AS build\n": "v1.26.10",
		"FROM golang:1.26 AS build\n":              "", // floating: refused
	} {
		p := filepath.Join(dir, "Dockerfile")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := imageGo(p)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q %v", content, got, err)
		}
	}
}
