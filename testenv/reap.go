package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// envtest starts etcd and kube-apiserver without tying them to the test
// binary's life, so a test binary that is killed (a timeout, ^C) would leave
// them running. Each control plane therefore records its server PIDs in a
// file named after the owning process, and the next start kills the servers
// of owners that are gone.

func pidDir() string { return filepath.Join(os.TempDir(), "cluster-backup-testenv") }

// recordChildren writes the PIDs of this process's children that run the
// given binaries, and returns the file to remove on a clean stop.
func recordChildren(names ...string) (string, error) {
	var pids []string
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return "", err
	}
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		comm := s[strings.IndexByte(s, '(')+1 : i]
		if len(fields) < 2 || fields[1] != strconv.Itoa(me) {
			continue
		}
		for _, n := range names {
			if strings.HasPrefix(n, comm) {
				pids = append(pids, strconv.Itoa(pid))
			}
		}
	}
	if err := os.MkdirAll(pidDir(), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(pidDir(), fmt.Sprintf("%d-*.pids", me))
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.WriteString(strings.Join(pids, "\n"))
	return f.Name(), err
}

// reapOrphans kills servers recorded by owners that no longer run.
func reapOrphans() {
	files, _ := filepath.Glob(filepath.Join(pidDir(), "*.pids"))
	for _, file := range files {
		owner, _, _ := strings.Cut(filepath.Base(file), "-")
		if _, err := os.Stat(filepath.Join("/proc", owner)); err == nil {
			continue // still running
		}
		b, _ := os.ReadFile(file)
		for _, p := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(p)
			if err != nil {
				continue
			}
			// Only a server from the provisioned binaries: the PID may
			// have been reused by another program.
			exe, err := os.Readlink(filepath.Join("/proc", p, "exe"))
			if err == nil && strings.HasPrefix(exe, Assets()) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.Remove(file)
	}
}
