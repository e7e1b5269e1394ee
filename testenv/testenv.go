// Package testenv starts the real servers that integration tests and
// benchmarks run against: etcd + kube-apiserver (through envtest),
// optionally kube-controller-manager, and a MinIO server, all on free
// 127.0.0.1 ports. The binaries come from hack/provision.sh, which builds them
// from the Go module proxy and caches them by version.
//
// Without the binaries a test skips with a hint, except when CI=true: there a
// missing binary is a failure, so a run can never pass by skipping.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// AssetsEnv names the directory holding the server binaries.
const AssetsEnv = "CLUSTER_BACKUP_ASSETS"

// Assets returns the directory with the server binaries: $CLUSTER_BACKUP_ASSETS,
// or the provisioning script's default cache directory.
func Assets() string {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return dir
	}
	root := os.Getenv("CLUSTER_BACKUP_CACHE")
	if root == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		root = filepath.Join(cache, "cluster-backup")
	}
	return filepath.Join(root, fmt.Sprintf("assets-%s-%s-%s", runtime.Version(), runtime.GOOS, runtime.GOARCH))
}

// Binary returns the path of a provisioned binary.
func Binary(name string) (string, error) {
	p := filepath.Join(Assets(), name)
	st, err := os.Stat(p)
	if err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found in %s: run hack/provision.sh (make test does)", name, Assets())
	}
	return p, nil
}

// Require returns the binaries' paths, or ends the test: a skip on a
// developer's machine, a failure under CI=true.
func Require(tb testing.TB, names ...string) []string {
	tb.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := Binary(n)
		if err != nil {
			if InCI() {
				tb.Fatalf("CI=true and a test server is missing: %v", err)
			}
			tb.Skipf("skipping integration test: %v", err)
		}
		paths[i] = p
	}
	return paths
}

// InCI reports whether missing servers must fail rather than skip.
func InCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a child server. It dies with the test binary even when that
// binary is killed (Pdeathsig), so no server outlives its test run.
type process struct {
	name string
	log  string // path of its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(name string, logPath string, env []string, bin string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitHTTP polls url until it answers 200, the process exits (its log is
// returned in the error) or timeout passes.
func (p *process) waitHTTP(ctx context.Context, client *http.Client, url string, timeout time.Duration) error {
	return p.waitAnswer(ctx, client, url, timeout, func(code int) bool { return code == http.StatusOK })
}

// waitAnswer is waitHTTP for an answer that ok accepts.
func (p *process) waitAnswer(ctx context.Context, client *http.Client, url string, timeout time.Duration, ok func(code int) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if done, err := p.exited(); done {
			log, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited during start-up: %w\n%s", p.name, err, log)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", p.name, url, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// exited reports whether the process has ended, with its error.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}
