package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// process is a program under measurement: the service or the baseline.
type process struct {
	cmd     *exec.Cmd
	metrics string // host:port of /metrics, for the service
	done    chan struct{}

	mu     sync.Mutex
	passes []map[string]any
	packs  []map[string]any // "Restore pack written" lines
	lines  int
	synced chan struct{}
}

func startProcess(bin string, args []string, env map[string]string, logPath string) (*process, error) {
	p := &process{cmd: exec.Command(bin, args...), done: make(chan struct{}), synced: make(chan struct{})}
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.metrics = env["METRICS_ADDR"]
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		defer logFile.Close()
		p.follow(io.TeeReader(out, logFile))
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// follow reads the JSON log lines (or the baseline's "synced").
func (p *process) follow(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	syncedOnce := sync.Once{}
	for sc.Scan() {
		if sc.Text() == "synced" {
			syncedOnce.Do(func() { close(p.synced) })
			continue
		}
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		p.mu.Lock()
		p.lines++
		if line["operation"] == "backup_complete" {
			p.passes = append(p.passes, line)
		}
		if line["message"] == "Restore pack written" {
			p.packs = append(p.packs, line)
		}
		p.mu.Unlock()
	}
}

func (p *process) passCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.passes)
}

// waitPasses waits for n backup_complete lines.
func (p *process) waitPasses(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for p.passCount() < n {
		select {
		case <-p.done:
			return fmt.Errorf("the service exited before pass %d", n)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no pass %d within %s", n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// waitPack waits for the first restore pack and returns its bytes and the
// seconds its upload took.
func (p *process) waitPack(timeout time.Duration) (bytes int64, seconds float64, err error) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		var line map[string]any
		if len(p.packs) > 0 {
			line = p.packs[0]
		}
		p.mu.Unlock()
		if line != nil {
			data, _ := line["data"].(map[string]any)
			b, _ := data["bytes"].(float64)
			ms, _ := line["duration_ms"].(float64)
			return int64(b), ms / 1000, nil
		}
		select {
		case <-p.done:
			return 0, 0, errors.New("the service exited before writing its restore pack")
		default:
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("no restore pack within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// peakRSS reads VmHWM, the process's peak resident set, in bytes.
func (p *process) peakRSS() (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}

// metric sums a metric's samples whose labels include match.
func (p *process) metric(name string, match map[string]string) (float64, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return testenv.SumMetric(resp.Body, name, match)
}

// cpuSeconds is the CPU (user and system) the process has used so far.
func (p *process) cpuSeconds() (float64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "stat"))
	if err != nil {
		return 0, err
	}
	_, _, secs, ok := parseStat(string(b))
	if !ok {
		return 0, fmt.Errorf("cannot read the CPU time of process %d", p.cmd.Process.Pid)
	}
	return secs, nil
}
