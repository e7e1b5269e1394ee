package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
)

// foreignResult is the service's start-up and first passes with a flood of
// keys under its prefix that are not its own, against the same service
// without them, in the same run.
type foreignResult struct {
	ForeignKeys      int     `json:"foreign_keys"`
	Objects          int     `json:"objects"` // the service's own ConfigMaps
	MemoryLimit      int64   `json:"memory_limit_bytes"`
	PeakRSS          int64   `json:"peak_rss_bytes"`
	BaselineRSS      int64   `json:"baseline_rss_bytes"`
	BytesPerKey      float64 `json:"bytes_per_foreign_key"`
	FirstPass        float64 `json:"first_pass_seconds"`
	BaselineFirst    float64 `json:"baseline_first_pass_seconds"`
	Passes           int     `json:"passes"`
	ForeignDeleted   int     `json:"foreign_keys_deleted"`
	PutSeconds       float64 `json:"put_seconds"`
	ForeignPerSecond float64 `json:"foreign_puts_per_second"`
}

// chartMemoryLimit is the chart's default memory limit; the service sets
// GOMEMLIMIT to 90% of it in the pod, as here.
const chartMemoryLimit = 1 << 30

// foreignScenario backs up the seeded ConfigMaps twice: once under a clean
// prefix, once under a prefix holding cfg.foreignKeys keys it did not write
// (half in its layout with another cluster's identity, half outside the
// layout), and compares the peak memory and the time to the first pass.
func (e *env) foreignScenario(ctx context.Context) (foreignResult, error) {
	r := foreignResult{ForeignKeys: e.cfg.foreignKeys, MemoryLimit: chartMemoryLimit}
	if err := e.seed(ctx, max(e.seeded, 1000)); err != nil {
		return r, err
	}
	r.Objects = e.seeded
	r.Passes = 2
	var err error
	if r.BaselineRSS, r.BaselineFirst, err = e.startWithPasses("foreign-base", r.Passes); err != nil {
		return r, err
	}
	e.log("foreign keys: putting %d keys under clusterbackup/foreign/", r.ForeignKeys)
	start := time.Now()
	if err := e.putForeign(ctx, "foreign", r.ForeignKeys); err != nil {
		return r, err
	}
	r.PutSeconds = time.Since(start).Seconds()
	r.ForeignPerSecond = float64(r.ForeignKeys) / r.PutSeconds
	if r.PeakRSS, r.FirstPass, err = e.startWithPasses("foreign", r.Passes); err != nil {
		return r, err
	}
	r.BytesPerKey = float64(r.PeakRSS-r.BaselineRSS) / float64(max(1, r.ForeignKeys))
	e.log("foreign keys: checking a sample of 100 is still there")
	for i := 0; i < r.ForeignKeys; i += max(1, r.ForeignKeys/100) {
		statCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := e.s3.StatObject(statCtx, bucket, foreignKey("foreign", i), minio.StatObjectOptions{})
		cancel()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			r.ForeignDeleted++
		} else if err != nil {
			return r, fmt.Errorf("check foreign key %d: %w", i, err)
		}
	}
	return r, nil
}

// startWithPasses runs the service until it completed n passes and returns
// its peak RSS and the time from start to the end of the first pass.
func (e *env) startWithPasses(cluster string, n int) (int64, float64, error) {
	start := time.Now()
	p, err := e.startService(cluster, map[string]string{
		"SNAPSHOT_INTERVAL": "10s",
		"GOMEMLIMIT":        fmt.Sprint(chartMemoryLimit / 10 * 9),
	})
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	if err := p.waitPasses(1, 30*time.Minute); err != nil {
		return 0, 0, err
	}
	first := time.Since(start).Seconds()
	if err := p.waitPasses(n, 30*time.Minute); err != nil {
		return 0, 0, err
	}
	rss, err := p.peakRSS()
	e.log("%s: first pass after %.1f s, peak RSS %s after %d passes", cluster, first, mib(rss), n)
	return rss, first, err
}

// foreignKey is the i-th key of the flood: even ones in the layout, odd
// ones outside it.
func foreignKey(cluster string, i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("clusterbackup/%s/flood-%02d/configmaps/x-%07d.yaml", cluster, i%20, i)
	}
	return fmt.Sprintf("clusterbackup/%s/junk/%07d.bin", cluster, i)
}

// putForeign writes the flood: small objects, those in the layout stamped
// with another cluster's identity.
func (e *env) putForeign(ctx context.Context, cluster string, n int) error {
	body := []byte("foreign\n")
	meta := object.Meta{APIVersion: "v1", SHA256: object.Digest(body), ClusterUID: "another-cluster-uid"}
	return forEach(ctx, 0, n, 4*e.cfg.concurrency, func(i int) error {
		opts := sink.PutOptions(meta)
		_, err := e.s3.PutObject(ctx, bucket, foreignKey(cluster, i), bytes.NewReader(body), int64(len(body)), opts)
		return err
	})
}
