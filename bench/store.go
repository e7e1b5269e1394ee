package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// The stores the bench runs against (-store).
const (
	storeMinIO       = "minio"             // one MinIO server, its drive on disk
	storeMinIOTmpfs  = "minio-tmpfs"       // one MinIO server, its drive in memory
	storeDistributed = "minio-distributed" // four MinIO servers, one drive each, one erasure set
	storeSeaweedFS   = "seaweedfs"         // SeaweedFS's S3 gateway
)

var storeDescriptions = map[string]string{
	storeMinIO:       "MinIO single drive on disk",
	storeMinIOTmpfs:  "MinIO single drive on tmpfs",
	storeDistributed: "distributed MinIO (4 servers, 1 drive each) on disk",
	storeSeaweedFS:   "SeaweedFS (weed server -s3) on disk",
}

// store is the object store under measurement: the server's own endpoint
// and the one the service and the ceiling use (the counting proxy, or the
// server itself with -direct).
type store struct {
	server               string
	endpoint             string
	accessKey, secretKey string
	stop                 func()
}

// startStore starts the store that cfg names.
func (e *env) startStore(ctx context.Context) (*store, error) {
	switch e.cfg.store {
	case storeMinIO, storeMinIOTmpfs:
		dir := e.work
		if e.cfg.store == storeMinIOTmpfs {
			var err error
			if dir, err = os.MkdirTemp("/dev/shm", "cluster-backup-bench-"); err != nil {
				return nil, fmt.Errorf("a directory on tmpfs: %w", err)
			}
		}
		// Its request counters are public: with -direct, they count the
		// PUTs.
		m, err := testenv.StartMinIOWith(ctx, dir, testenv.MinIOOptions{Env: []string{"MINIO_PROMETHEUS_AUTH_TYPE=public"}})
		if err != nil {
			return nil, err
		}
		return &store{server: m.Endpoint, accessKey: m.AccessKey, secretKey: m.SecretKey, stop: func() {
			m.Stop()
			if dir != e.work {
				_ = os.RemoveAll(dir)
			}
		}}, nil
	case storeDistributed:
		nodes, err := testenv.StartMinIOCluster(ctx, e.work, 4)
		if err != nil {
			return nil, err
		}
		return &store{server: nodes[0].Endpoint, accessKey: nodes[0].AccessKey, secretKey: nodes[0].SecretKey, stop: func() {
			for _, n := range nodes {
				n.Stop()
			}
		}}, nil
	case storeSeaweedFS:
		s, err := testenv.StartSeaweedFS(ctx, e.work)
		if err != nil {
			return nil, err
		}
		return &store{server: s.Endpoint, accessKey: s.AccessKey, secretKey: s.SecretKey, stop: s.Stop}, nil
	}
	return nil, fmt.Errorf("unknown -store %q", e.cfg.store)
}

// puts is the number of PUTs of objects the store has taken so far: the
// proxy's count, or with -direct the MinIO server's own.
func (e *env) puts() (int64, error) {
	if !e.cfg.direct {
		return e.proxy.puts.Load(), nil
	}
	resp, err := http.Get("http://" + e.store.server + "/minio/metrics/v3/api/requests")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("MinIO's request metrics: %s", resp.Status)
	}
	n, err := testenv.SumMetric(resp.Body, "minio_api_requests_total", map[string]string{"name": "PutObject"})
	return int64(n), err
}

// checkStoreConfig refuses the combinations the bench cannot measure.
func (c config) checkStoreConfig() error {
	if _, ok := storeDescriptions[c.store]; !ok {
		return fmt.Errorf("unknown -store %q", c.store)
	}
	if !c.direct {
		return nil
	}
	if c.store != storeMinIO && c.store != storeMinIOTmpfs {
		return fmt.Errorf("-direct counts PUTs with the server's own metrics: only for -store %s or %s", storeMinIO, storeMinIOTmpfs)
	}
	for s := range c.scenarios {
		if s != "initial" {
			return fmt.Errorf("-direct runs the initial scenario only (the others count requests at the proxy), not %q", s)
		}
	}
	return nil
}
