package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// setMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// container's cgroup limit, so the garbage collector works harder before the
// kernel's OOM killer would. GOMEMLIMIT, when set, wins. It returns the limit
// set, or 0.
func setMemoryLimit(cgroupFile string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	b, err := os.ReadFile(cgroupFile)
	if err != nil {
		return 0
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || limit <= 0 { // "max": no limit
		return 0
	}
	soft := limit / 10 * 9
	debug.SetMemoryLimit(soft)
	return soft
}
