package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// SeaweedFS is a second S3 implementation: a single `weed server` process
// (master, volume server, filer and S3 gateway) on 127.0.0.1. Its S3
// listings carry no user metadata, unlike MinIO's.
type SeaweedFS struct {
	Endpoint  string // S3 host:port
	AccessKey string
	SecretKey string

	dir  string
	proc *process
}

// StartSeaweedFS starts SeaweedFS with an S3 gateway in a fresh directory
// under workDir and waits until the gateway answers.
func StartSeaweedFS(ctx context.Context, workDir string) (*SeaweedFS, error) {
	bin, err := Binary("weed")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(workDir, "seaweedfs-")
	if err != nil {
		return nil, err
	}
	// Each service listens on a port and on port+10000 for gRPC: pick
	// ports whose gRPC twin is free too.
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = freePortPair(); err != nil {
			return nil, err
		}
	}
	s := &SeaweedFS{
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", ports[3]),
		AccessKey: testAccessKey,
		SecretKey: testSecretKey,
		dir:       dir,
	}
	config, err := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "cluster-backup",
		"credentials": []any{map[string]any{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(configFile, config, 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	s.proc, err = startProcess("weed", filepath.Join(dir, "weed.log"), nil, bin, "server",
		"-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+strconv.Itoa(ports[0]), "-volume.port="+strconv.Itoa(ports[1]),
		"-filer", "-filer.port="+strconv.Itoa(ports[2]),
		"-s3", "-s3.port="+strconv.Itoa(ports[3]), "-s3.config="+configFile,
		"-volume.max=0", "-master.volumeSizeLimitMB=64")
	if err != nil {
		return nil, err
	}
	// The gateway answers (403 without credentials) once the filer is up.
	anyAnswer := func(int) bool { return true }
	if err := s.proc.waitAnswer(ctx, http.DefaultClient, "http://"+s.Endpoint+"/", 2*time.Minute, anyAnswer); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop ends the server and removes its data.
func (s *SeaweedFS) Stop() {
	s.proc.stop(5 * time.Second)
	_ = os.RemoveAll(s.dir)
}

// freePortPair is a free port whose gRPC twin (port+10000) is free too.
func freePortPair() (int, error) {
	for range 50 {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if p+10000 > 65535 {
			continue
		}
		if free(p + 10000) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port pair")
}

// free reports whether port can be listened on at 127.0.0.1.
func free(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
