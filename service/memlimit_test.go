package service

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
	writeAt := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(v string) string { return writeAt("memory.max", v) }
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
	// cgroup v1: the v2 file is missing, the v1 file holds the limit.
	v1 := writeAt("memory.limit_in_bytes", "536870912\n")
	if got := setMemoryLimit(filepath.Join(dir, "missing"), v1); got != 536870912/10*9 {
		t.Errorf("cgroup v1 limit gave %d", got)
	}
	if got := setMemoryLimit(filepath.Join(dir, "missing"), writeAt("memory.limit_in_bytes", "9223372036854771712\n")); got != 0 {
		t.Errorf("cgroup v1 without a limit gave %d", got)
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := setMemoryLimit(write("1073741824")); got != 0 {
		t.Error("GOMEMLIMIT did not win")
	}
}
