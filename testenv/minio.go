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
	dir, err := os.MkdirTemp(workDir, "minio-")
	if err != nil {
		return nil, err
	}
	m := &MinIO{
		Endpoint: fmt.Sprintf("127.0.0.1:%d", port),
		// Distinctive, so that a test can tell that they leak nowhere.
		AccessKey: "cbk-access-7Q2xW",
		SecretKey: "cbk-secret-9Zr4Lk-not-for-production",
		env:       opts.Env,
		bin:       bin,
		dir:       dir,
		port:      port,
		console:   console,
	}
	if err := m.Start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// Start (re)starts the server on the same port and data, for outage tests.
func (m *MinIO) Start(ctx context.Context) error {
	var err error
	m.proc, err = startProcess("minio", filepath.Join(m.dir, "minio.log"), append([]string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_UPDATE=off",
		"MINIO_BROWSER=off",
		"MINIO_CI_CD=1",
	}, m.env...), m.bin, "server", "--quiet",
		"--address", m.Endpoint,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", m.console),
		filepath.Join(m.dir, "data"))
	if err != nil {
		return err
	}
	// /minio/health/cluster only answers 200 once the server accepts
	// writes (live and ready answer earlier).
	return m.proc.waitHTTP(ctx, http.DefaultClient, "http://"+m.Endpoint+"/minio/health/cluster", 60*time.Second)
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
