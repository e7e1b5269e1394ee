package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in
// /proc/PID/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTimes is CPU seconds (user and system) by process name.
type cpuTimes map[string]float64

// serverCPU reads the CPU seconds used so far by the bench's own process
// ("bench") and by each server it started (etcd, kube-apiserver, minio...),
// from /proc: the processes whose parent is the bench.
func serverCPU() (cpuTimes, error) {
	out := cpuTimes{}
	self := os.Getpid()
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited since the glob
		}
		comm, ppid, secs, ok := parseStat(string(b))
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		switch {
		case !ok:
		case pid == self:
			out["bench"] += secs
		case ppid == self:
			out[comm] += secs
		}
	}
	return out, nil
}

// parseStat reads the name, parent and CPU seconds of one /proc/PID/stat.
// The name is in parentheses and may hold spaces; the fields after it are
// numbered from 3 (state).
func parseStat(s string) (comm string, ppid int, secs float64, ok bool) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, 0, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])    // field 4
	utime, _ := strconv.Atoi(f[11]) // field 14
	stime, _ := strconv.Atoi(f[12]) // field 15
	return s[open+1 : end], ppid, float64(utime+stime) / clockTicks, true
}

// since is the CPU each process used between before and c.
func (c cpuTimes) since(before cpuTimes) cpuTimes {
	out := cpuTimes{}
	for k, v := range c {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func (c cpuTimes) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s %.1fs", k, c[k]))
	}
	return strings.Join(parts, ", ")
}

// serviceProcess is the service's name in /proc.
const serviceProcess = "cluster-backup"

// coresAt is the cores the processes would need to carry rate updates a
// second, from the CPU c they used for updates: the service's (own) and
// all the others' (rest: the API server, etcd, the store and the bench's
// load). When they add up to the machine's cores, every queue grows and no
// latency figure says anything about the service.
func (c cpuTimes) coresAt(service string, updates, rate int) (rest, own float64) {
	if updates == 0 {
		return 0, 0
	}
	for k, v := range c {
		need := v / float64(updates) * float64(rate)
		if k == service {
			own += need
		} else {
			rest += need
		}
	}
	return rest, own
}
