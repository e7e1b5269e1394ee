package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	dir := t.TempDir()
	write := func(v string) string {
		p := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("GOMEMLIMIT", "")
	if got := setMemoryLimit(write("1073741824\n")); got != 1073741824/10*9 || debug.SetMemoryLimit(-1) != got {
		t.Errorf("limit %d", got)
	}
	if got := setMemoryLimit(write("max\n")); got != 0 {
		t.Errorf("no cgroup limit gave %d", got)
	}
	if got := setMemoryLimit(filepath.Join(dir, "missing")); got != 0 {
		t.Errorf("missing file gave %d", got)
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := setMemoryLimit(write("1073741824")); got != 0 {
		t.Error("GOMEMLIMIT did not win")
	}
}
