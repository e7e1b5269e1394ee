package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// MinIO is a MinIO server on 127.0.0.1 with a data directory of its own.
type MinIO struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string

	bin     string
	dir     string
	env     []string
	drives  []string // a distributed set's endpoint list; nil: dir/data
	port    int
	console int
	proc    *process
}

// MinIOOptions change how a MinIO server starts.
type MinIOOptions struct {
	// Env is added to the server's environment, as MINIO_KMS_SECRET_KEY
	// for server-side encryption with a static key.
	Env []string
}

// StartMinIO starts a single-drive MinIO server in a fresh directory under
// workDir and waits until it takes writes.
func StartMinIO(ctx context.Context, workDir string) (*MinIO, error) {
	return StartMinIOWith(ctx, workDir, MinIOOptions{})
}

// StartMinIOWith is StartMinIO with options.
func StartMinIOWith(ctx context.Context, workDir string, opts MinIOOptions) (*MinIO, error) {
	m, err := newMinIO(workDir, "minio-")
	if err != nil {
		return nil, err
	}
	m.env = opts.Env
	if err := m.Start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// The credentials of every test store: distinctive, so that a test can
// tell that they leak nowhere.
const (
	testAccessKey = "cbk-access-7Q2xW"
	testSecretKey = "cbk-secret-9Zr4Lk-not-for-production"
)

// newMinIO prepares a server, not started: its ports and a fresh directory
// under workDir named after pattern (as os.MkdirTemp).
func newMinIO(workDir, pattern string) (*MinIO, error) {
	bin, err := Binary("minio")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	console, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(workDir, pattern)
	if err != nil {
		return nil, err
	}
	return &MinIO{
		Endpoint: fmt.Sprintf("127.0.0.1:%d", port), AccessKey: testAccessKey, SecretKey: testSecretKey,
		bin: bin, dir: dir, port: port, console: console,
	}, nil
}

// Start (re)starts the server on the same port and data, for outage tests.
func (m *MinIO) Start(ctx context.Context) error {
	if err := m.launch(); err != nil {
		return err
	}
	return m.waitReady(ctx)
}

func (m *MinIO) launch() error {
	drives := m.drives
	if drives == nil {
		drives = []string{filepath.Join(m.dir, "data")}
	}
	var err error
	m.proc, err = startProcess("minio", filepath.Join(m.dir, "minio.log"), append([]string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_UPDATE=off",
		"MINIO_BROWSER=off",
		"MINIO_CI_CD=1",
	}, m.env...), m.bin, append([]string{"server", "--quiet",
		"--address", m.Endpoint,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", m.console)}, drives...)...)
	return err
}

// waitReady waits until the server takes writes: /minio/health/cluster
// answers 200 only then (live and ready answer earlier), and in a
// distributed set only once a write quorum of its nodes is up.
func (m *MinIO) waitReady(ctx context.Context) error {
	return m.proc.waitHTTP(ctx, http.DefaultClient, "http://"+m.Endpoint+"/minio/health/cluster", 90*time.Second)
}

// StartMinIOCluster starts n MinIO servers on loopback, one drive each,
// as one distributed erasure set, as production MinIO runs: each node is
// started with the same list of every node's drive. It waits until the
// set takes writes. Any node serves the whole set.
func StartMinIOCluster(ctx context.Context, workDir string, n int) ([]*MinIO, error) {
	nodes := make([]*MinIO, n)
	var drives []string
	for i := range nodes {
		m, err := newMinIO(workDir, fmt.Sprintf("minio-node%d-", i+1))
		if err != nil {
			return nil, err
		}
		// In a container (/.dockerenv), MinIO waits for every node's host
		// to resolve to a non-loopback address; this names the node's own
		// endpoint instead, as orchestrated installs do.
		m.env = []string{"_MINIO_SERVER_LOCAL=" + m.Endpoint}
		nodes[i] = m
		drives = append(drives, "http://"+m.Endpoint+filepath.Join(m.dir, "drive"))
	}
	stopAll := func() {
		for _, m := range nodes {
			if m.proc != nil {
				m.Stop()
			}
		}
	}
	for _, m := range nodes {
		m.drives = drives
		if err := m.launch(); err != nil {
			stopAll()
			return nil, err
		}
	}
	for _, m := range nodes {
		if err := m.waitReady(ctx); err != nil {
			stopAll()
			return nil, err
		}
	}
	return nodes, nil
}

// Kill stops the server abruptly, keeping its data, to simulate an outage.
func (m *MinIO) Kill() {
	m.proc.stop(0)
}

// Stop ends the server and removes its data.
func (m *MinIO) Stop() {
	m.proc.stop(5 * time.Second)
	_ = os.RemoveAll(m.dir)
}
