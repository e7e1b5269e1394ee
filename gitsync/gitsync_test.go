package gitsync

import (
	"strings"
	"testing"
	"time"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/object"
)

func at(ms int) change {
	return change{version: object.Version{Time: time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond)}}
}

func TestWindows(t *testing.T) {
	changes := []change{at(0), at(100), at(999), at(1000), at(1000), at(1500), at(5000)}
	got := windows(changes, time.Second)
	var sizes []int
	for _, w := range got {
		sizes = append(sizes, len(w))
	}
	// A window is cut at the first change a width after its start, never
	// between two changes of the same instant.
	want := []int{3, 3, 1}
	if len(sizes) != len(want) {
		t.Fatalf("windows %v, want %v", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("windows %v, want %v", sizes, want)
		}
	}
	if windows(nil, time.Second) != nil {
		t.Error("windows of nothing")
	}
}

func TestTypeAndSecrets(t *testing.T) {
	for body, want := range map[string]string{
		"apiVersion: apps/v1\nkind: Deployment\n": "apps/Deployment",
		"apiVersion: v1\nkind: ConfigMap\n":       "v1/ConfigMap",
		"not: a document\n":                       "configmaps",
	} {
		if got := typeOf([]byte(body), "configmaps"); got != want {
			t.Errorf("typeOf(%q) = %q, want %q", body, got, want)
		}
	}
	plain := "apiVersion: v1\nkind: Secret\ndata:\n  k: djE=\n"
	sealed := "apiVersion: v1\nkind: Secret\nmetadata:\n  annotations:\n    " + encrypt.Annotation + ": " + encrypt.BoundScheme + "\ndata:\n  k: YWdl\n"
	if !plaintextSecret([]byte(plain)) {
		t.Error("a Secret in the clear is not seen as one")
	}
	if plaintextSecret([]byte("apiVersion: v1\nkind: ConfigMap\n")) {
		t.Error("a ConfigMap seen as a plaintext Secret")
	}
	if plaintextSecret([]byte(sealed)) {
		t.Error("an encrypted Secret seen as one in the clear")
	}
}

func TestSplitAuthor(t *testing.T) {
	if n, e := splitAuthor("cluster-backup <cb@example.com>"); n != "cluster-backup" || e != "cb@example.com" {
		t.Errorf("%q %q", n, e)
	}
}

func TestSubcommand(t *testing.T) {
	for args, want := range map[string]string{
		"-c credential.helper= -c credential.helper=store push -q origin": "push",
		"fetch -q --depth 1": "fetch",
		"-c":                 "",
	} {
		if got := subcommand(strings.Fields(args)); got != want {
			t.Errorf("subcommand(%q) = %q, want %q", args, got, want)
		}
	}
}
