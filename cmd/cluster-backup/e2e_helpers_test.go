package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// The servers shared by the end-to-end tests of this package. Each test
// uses its own CLUSTER_NAME, so tests never see each other's keys.
var e2e struct {
	err    error
	kube   *testenv.Kube
	minio  *testenv.MinIO
	bin    string
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	bucket *minio.Client
}

const bucketName = "backups"

func TestMain(m *testing.M) {
	code := func() int {
		if _, err := testenv.Binary("kube-apiserver"); err != nil {
			e2e.err = err
			return m.Run()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		dir, err := os.MkdirTemp("", "cluster-backup-e2e-")
		if err != nil {
			e2e.err = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		e2e.bin = filepath.Join(dir, "cluster-backup")
		if out, err := exec.Command("go", "build", "-race", "-o", e2e.bin, ".").CombinedOutput(); err != nil {
			e2e.err = fmt.Errorf("build: %w\n%s", err, out)
			return m.Run()
		}
		if e2e.kube, e2e.err = testenv.StartKube(ctx, testenv.KubeOptions{ControllerManager: true}); e2e.err != nil {
			return m.Run()
		}
		defer e2e.kube.Stop()
		if e2e.minio, e2e.err = testenv.StartMinIO(ctx, dir); e2e.err != nil {
			return m.Run()
		}
		defer e2e.minio.Stop()
		e2e.cs = kubernetes.NewForConfigOrDie(e2e.kube.Config)
		e2e.dyn = dynamic.NewForConfigOrDie(e2e.kube.Config)
		e2e.bucket, e2e.err = minioClient(e2e.minio)
		return m.Run()
	}()
	os.Exit(code)
}

func minioClient(srv *testenv.MinIO) (*minio.Client, error) {
	return minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
}

// requireServers ends the test when the real servers are not there: a
// failure under CI=true, a skip elsewhere.
func requireServers(t *testing.T) {
	t.Helper()
	testenv.Require(t, "etcd", "kube-apiserver", "kube-controller-manager", "minio")
	if e2e.err != nil {
		t.Fatalf("test servers: %v", e2e.err)
	}
}

// process is a cluster-backup process under test.
type process struct {
	t        *testing.T
	cluster  string
	cmd      *exec.Cmd
	metrics  string
	mu       sync.Mutex
	lines    []map[string]any
	done     chan struct{}
	exitErr  error
	minio    *testenv.MinIO
	stopOnce sync.Once
}

// serviceOptions are the environment beyond the defaults of startService.
type serviceOptions struct {
	env       map[string]string
	configMap map[string]string
	minio     *testenv.MinIO // default: the shared server
	args      []string       // default: run
	// secrets are strings that must appear in no log line, error or
	// metric, besides the store's credentials.
	secrets []string
}

func startService(t *testing.T, cluster string, opts serviceOptions) *process {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv := opts.minio
	if srv == nil {
		srv = e2e.minio
	}
	env := storeEnv(srv)
	maps.Copy(env, map[string]string{
		"CLUSTER_NAME":      cluster,
		"METRICS_ADDR":      fmt.Sprintf("127.0.0.1:%d", port),
		"DEBOUNCE":          "300ms",
		"RETRY_DELAY":       "200ms",
		"SNAPSHOT_INTERVAL": "1h",
		"LOG_LEVEL":         "debug",
	})
	maps.Copy(env, opts.env)
	if opts.configMap != nil {
		dir := t.TempDir()
		for k, v := range opts.configMap {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		env["BACKUP_CONFIG_DIR"] = dir
	}
	args := opts.args
	if args == nil {
		args = []string{"run"}
	}
	s := &process{t: t, cluster: cluster, metrics: env["METRICS_ADDR"], done: make(chan struct{}), minio: srv}
	s.cmd = exec.Command(e2e.bin, args...)
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go s.read(stdout)
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		exposition := s.scrape()
		s.stop()
		b, _ := os.ReadFile(stderr.Name())
		s.checkNoLeak(append([]string{srv.AccessKey, srv.SecretKey}, opts.secrets...), string(b), exposition)
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", cluster, b)
			s.dumpLogs(40)
		}
	})
	return s
}

// storeEnv is the environment that points the service or a command at
// the cluster under test and at the store srv.
func storeEnv(srv *testenv.MinIO) map[string]string {
	return map[string]string{
		"KUBECONFIG":       e2e.kube.Kubeconfig,
		"MINIO_ENDPOINT":   srv.Endpoint,
		"MINIO_ACCESS_KEY": srv.AccessKey,
		"MINIO_SECRET_KEY": srv.SecretKey,
		"MINIO_BUCKET":     bucketName,
		"MINIO_USE_SSL":    "false",
	}
}

// scrape returns the metrics exposition, "" when it cannot be read.
func (s *process) scrape() string {
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// checkNoLeak fails the test when a credential or secret appears in the
// service's log lines, its stderr or its metrics.
func (s *process) checkNoLeak(secrets []string, stderr, exposition string) {
	var logs strings.Builder
	for _, l := range s.logs("") {
		b, _ := json.Marshal(l)
		logs.Write(b)
		logs.WriteByte('\n')
	}
	for _, secret := range secrets {
		for where, text := range map[string]string{"log lines": logs.String(), "stderr": stderr, "metrics": exposition} {
			if secret != "" && strings.Contains(text, secret) {
				s.t.Errorf("%s: a secret (%.4s...) appears in the %s", s.cluster, secret, where)
			}
		}
	}
}

func (s *process) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = map[string]any{"unparsable": sc.Text()}
		}
		s.mu.Lock()
		s.lines = append(s.lines, m)
		s.mu.Unlock()
	}
}

// logs returns the JSON lines seen so far whose operation is op.
func (s *process) logs(op string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.lines {
		if op == "" || l["operation"] == op {
			out = append(out, l)
		}
	}
	return out
}

func (s *process) dumpLogs(n int) {
	var all []map[string]any
	for _, l := range s.logs("") {
		if l["level"] != "debug" {
			all = append(all, l)
		}
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for _, l := range all {
		b, _ := json.Marshal(l)
		s.t.Logf("%s", b)
	}
}

// stop sends SIGTERM and checks for a clean exit within 30 s.
func (s *process) stop() {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			return // it ended by itself: the test judges how
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if s.exitErr != nil && !strings.Contains(s.exitErr.Error(), "signal: killed") {
				s.t.Errorf("%s exited with %v after SIGTERM", s.cluster, s.exitErr)
			}
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			s.t.Errorf("%s did not exit within 30 s of SIGTERM", s.cluster)
		}
	})
}

// waitExit waits for the process to end by itself and returns its exit
// code.
func (s *process) waitExit(timeout time.Duration, what string) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("%s: still running after %s", what, timeout)
	}
	var exit *exec.ExitError
	switch {
	case s.exitErr == nil:
		return 0
	case errors.As(s.exitErr, &exit):
		return exit.ExitCode()
	}
	s.t.Fatalf("%s: %v", what, s.exitErr)
	return -1
}

// waitReady polls /readyz until the informers have synced.
func (s *process) waitReady() {
	s.t.Helper()
	eventually(s.t, 60*time.Second, "readyz", func() bool {
		select {
		case <-s.done:
			s.t.Fatalf("%s exited: %v", s.cluster, s.exitErr)
		default:
		}
		return s.get("/readyz") == http.StatusOK
	})
}

// waitPass waits until the n-th backup_complete line.
func (s *process) waitPass(n int) map[string]any {
	s.t.Helper()
	eventually(s.t, 120*time.Second, "backup_complete", func() bool { return len(s.logs("backup_complete")) >= n })
	return s.logs("backup_complete")[n-1]
}

func (s *process) get(path string) int {
	resp, err := http.Get("http://" + s.metrics + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric sums the samples of a metric whose labels include match.
func (s *process) metric(name string, match map[string]string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		s.t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	v, err := testenv.SumMetric(resp.Body, name, match)
	if err != nil {
		s.t.Fatalf("parse metrics: %v", err)
	}
	return v
}

func (s *process) key(ns, resource, name string) string {
	if ns == "" {
		ns = "_cluster"
	}
	return fmt.Sprintf("clusterbackup/%s/%s/%s/%s.yaml", s.cluster, ns, resource, name)
}

// stored lists the bucket's current objects under the service's cluster,
// without the cluster's identity marker and restore pack.
func (s *process) stored() map[string]minio.ObjectInfo {
	out := storedUnder(s.t, s.bucketClient(), "clusterbackup/"+s.cluster+"/")
	layout := object.Layout{Prefix: "clusterbackup", Cluster: s.cluster}
	delete(out, layout.IdentityKey())
	delete(out, layout.PackKey())
	return out
}

func (s *process) bucketClient() *minio.Client {
	if s.minio == e2e.minio {
		return e2e.bucket
	}
	c, err := minioClient(s.minio)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func storedUnder(t *testing.T, c *minio.Client, prefix string) map[string]minio.ObjectInfo {
	t.Helper()
	out := map[string]minio.ObjectInfo{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for o := range c.ListObjects(ctx, bucketName, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithMetadata: true}) {
		if o.Err != nil {
			return nil // the store may be down; callers poll
		}
		out[o.Key] = o
	}
	return out
}

// body reads a stored object, "" when it is absent.
func (s *process) body(key string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := s.bucketClient().GetObject(ctx, bucketName, key, minio.GetObjectOptions{})
	if err != nil {
		return ""
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		return ""
	}
	return string(b)
}

// versions counts the stored versions (PUTs) of key, delete markers aside.
func (s *process) versions(key string) int {
	s.t.Helper()
	n := 0
	for v := range s.bucketClient().ListObjects(context.Background(), bucketName, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if v.Err != nil {
			s.t.Fatal(v.Err)
		}
		if v.Key == key && !v.IsDeleteMarker {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// testenvMinIO starts a MinIO server of the test's own, for tests that stop it.
func testenvMinIO(t *testing.T) (*testenv.MinIO, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := testenv.StartMinIO(ctx, t.TempDir())
	if err != nil {
		return nil, err
	}
	t.Cleanup(srv.Stop)
	return srv, nil
}

// forgeVersion writes a version of key into the bucket as someone with the
// store's credentials and without the integrity key would: body, its
// digest (so only the tag can give it away), and the metadata given.
func forgeVersion(t *testing.T, key, body string, meta map[string]string) {
	t.Helper()
	md := map[string]string{object.MetaSHA256: object.Digest([]byte(body))}
	maps.Copy(md, meta)
	if _, err := e2e.bucket.PutObject(bg, bucketName, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{UserMetadata: md}); err != nil {
		t.Fatal(err)
	}
}
