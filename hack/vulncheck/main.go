// Command vulncheck runs govulncheck over the module and fails on every
// known vulnerability that the code reaches, with one distinction: a
// standard-library vulnerability is accepted when the Go release that the
// Dockerfile builds the shipped binary with already fixes it (the local
// toolchain may be older than the image's). Anything else fails the check.
//
// Usage: go run ./hack/vulncheck -govulncheck PATH -db DIR [packages]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"go/version"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

type message struct {
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

func main() {
	bin := flag.String("govulncheck", "govulncheck", "the govulncheck binary")
	db := flag.String("db", "", "directory of the vulnerability database")
	dockerfile := flag.String("dockerfile", "Dockerfile", "the Dockerfile whose golang image builds the shipped binary")
	flag.Parse()
	image, err := imageGo(*dockerfile)
	if err != nil {
		fail(err)
	}
	abs, err := filepath.Abs(*db)
	if err != nil {
		fail(err)
	}
	args := append([]string{"-db", "file://" + abs, "-format", "json"}, flag.Args()...)
	cmd := exec.Command(*bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fail(err)
	}
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	bad, accepted, err := judge(out, image)
	if err != nil {
		fail(err)
	}
	if err := cmd.Wait(); err != nil {
		fail(fmt.Errorf("govulncheck: %w", err))
	}
	for _, a := range accepted {
		fmt.Println("vulncheck: accepted:", a)
	}
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Println("vulncheck: VULNERABLE:", b)
		}
		os.Exit(1)
	}
	fmt.Printf("vulncheck: no reachable vulnerability in the shipped build (image Go %s)\n", image)
}

// judge reads govulncheck's JSON stream and sorts the reachable findings
// (those with a function in their trace) into failures and accepted ones.
func judge(r io.Reader, imageGo string) (bad, accepted []string, err error) {
	seenBad, seenOK := map[string]bool{}, map[string]bool{}
	dec := json.NewDecoder(bufio.NewReader(r))
	for dec.More() {
		var m message
		if err := dec.Decode(&m); err != nil {
			return nil, nil, err
		}
		f := m.Finding
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue // not reached from our code
		}
		t := f.Trace[0]
		line := fmt.Sprintf("%s in %s@%s, fixed in %s", f.OSV, t.Module, t.Version, f.FixedVersion)
		if t.Module == "stdlib" && f.FixedVersion != "" && version.Compare(goVersion(imageGo), goVersion(f.FixedVersion)) >= 0 {
			if !seenOK[line] {
				seenOK[line] = true
				accepted = append(accepted, line+" (the image builds with Go "+imageGo+")")
			}
			continue
		}
		if !seenBad[line] {
			seenBad[line] = true
			bad = append(bad, line)
		}
	}
	sort.Strings(bad)
	sort.Strings(accepted)
	return bad, accepted, nil
}

// imageGo reads the Go release of the Dockerfile's golang build image, as
// a semver ("v1.26.10"). The tag must name a patch release: a floating tag
// would make the check meaningless.
func imageGo(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^FROM golang:(\d+\.\d+\.\d+)\b`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s: no FROM golang:X.Y.Z line (pin the patch release)", path)
	}
	return "v" + strings.TrimSpace(string(m[1])), nil
}

// goVersion turns govulncheck's "v1.26.9" into go/version's "go1.26.9".
func goVersion(v string) string { return "go" + strings.TrimPrefix(v, "v") }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vulncheck:", err)
	os.Exit(2)
}
