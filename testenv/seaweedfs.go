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
	"strings"
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
	s := &SeaweedFS{AccessKey: testAccessKey, SecretKey: testSecretKey, dir: dir}
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
	// A port found free can be taken by another process before weed
	// listens on it: weed then exits, and starts again on other ports,
	// in a data directory of its own.
	for attempt := 1; ; attempt++ {
		ports, err := seaweedPorts(4)
		if err != nil {
			return nil, err
		}
		s.Endpoint = fmt.Sprintf("127.0.0.1:%d", ports[3])
		data := filepath.Join(dir, fmt.Sprintf("data-%d", attempt))
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
		err = s.proc.waitAnswer(ctx, http.DefaultClient, "http://"+s.Endpoint+"/", 2*time.Minute, anyAnswer)
		if err == nil {
			return s, nil
		}
		s.proc.stop(5 * time.Second)
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		s.Stop()
		return nil, err
	}
}

// Stop ends the server and removes its data.
func (s *SeaweedFS) Stop() {
	s.proc.stop(5 * time.Second)
	_ = os.RemoveAll(s.dir)
}

// seaweedPorts are n free ports for weed's services. Each service also
// listens on its port+10000 for gRPC: those must be free too, and no port
// may be another's gRPC twin.
func seaweedPorts(n int) ([]int, error) {
	taken := map[int]bool{}
	var ports []int
	for range 200 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		if p+10000 > 65535 || taken[p] || taken[p+10000] || !free(p+10000) {
			continue
		}
		taken[p], taken[p+10000] = true, true
		if ports = append(ports, p); len(ports) == n {
			return ports, nil
		}
	}
	return nil, fmt.Errorf("no %d free port pairs", n)
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
