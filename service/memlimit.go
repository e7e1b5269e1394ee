package service

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Where the container's memory limit is read: cgroup v2's unified
// hierarchy first, then cgroup v1's memory controller.
var cgroupMemoryFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// unlimitedV1 is the smallest value cgroup v1 reports for "no limit" (the
// largest page-aligned int64, 9223372036854771712 on 4 KiB pages, is what
// it reports); no real limit comes near it.
const unlimitedV1 = int64(1) << 62

// setMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// container's cgroup limit, read from the first of files that exists, so
// the garbage collector works harder before the kernel's OOM killer would.
// GOMEMLIMIT, when set, wins. It returns the limit set, or 0.
func setMemoryLimit(files ...string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || limit <= 0 || limit >= unlimitedV1 { // "max" or v1's huge value: no limit
			return 0
		}
		soft := limit / 10 * 9
		debug.SetMemoryLimit(soft)
		return soft
	}
	return 0
}
