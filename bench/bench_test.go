package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestSmoke runs every scenario of the harness at a small scale, so the
// harness cannot rot. It checks that each figure was produced and the
// behaviour the figures rest on (no PUT for unchanged or status-only
// objects, bursts collapsed), never how fast anything was.
func TestSmoke(t *testing.T) {
	testenv.Require(t, "etcd", "kube-apiserver", "minio")
	cfg := defaultConfig()
	cfg.sizes = []int{500}
	cfg.scenarios = map[string]bool{"initial": true, "restore": true, "latency": true, "amplification": true, "foreign": true}
	cfg.viewKeys, cfg.foreignKeys = 200, 2000
	cfg.latencyRate, cfg.latencyDuration, cfg.latencyObjects = 20, 3*time.Second, 100
	cfg.statusObjects, cfg.burstObjects = 50, 3
	cfg.repeats = 2
	cfg.out = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.write(cfg.out); err != nil {
		t.Fatal(err)
	}
	i := res.Initial[0]
	if i.Runs != 2 || i.PutsTotal < 500 || i.CeilingPerSecond <= 0 || i.PeakRSS <= 0 || i.BaselineRSS <= 0 {
		t.Errorf("initial figures missing: %+v", i)
	}
	if i.APIRequests["GET configmaps"] != 0 {
		t.Errorf("per-object GETs at start: %v", i.APIRequests)
	}
	if l := res.Latency; l == nil || l.Landed != l.Updates || l.Updates == 0 || l.P99 <= 0 {
		t.Errorf("latency figures: %+v", l)
	}
	a := res.Amplification
	if a == nil {
		t.Fatal("no amplification figures")
	}
	if a.RestartPuts != 0 || a.StatusPuts != 0 || a.BurstMaxPerObject > 2 || a.BurstPuts == 0 {
		t.Errorf("write amplification: %+v", a)
	}
	if a.PassAPIRequests["LIST configmaps"] != 0 {
		t.Errorf("a snapshot pass listed from the API server: %v", a.PassAPIRequests)
	}
	x := res.Restore
	if x == nil || x.Objects != 500 || x.CeilingPerSecond <= 0 || x.PeakRSS <= 0 || x.ViewListRequests < 1 {
		t.Fatalf("restore figures: %+v", x)
	}
	if w := x.RerunWrites["PATCH configmaps"] + x.RerunWrites["POST configmaps"] + x.RerunWrites["PUT configmaps"]; w != 0 {
		t.Errorf("the second restore wrote %d ConfigMaps", w)
	}
	if x.DiffRequests["GET configmaps"] != 0 {
		t.Errorf("diff made per-object GETs: %v", x.DiffRequests)
	}
	if f := res.Foreign; f == nil || f.PeakRSS <= 0 || f.BaselineRSS <= 0 || f.ForeignDeleted != 0 || f.Passes != 2 {
		t.Errorf("foreign-key figures: %+v", f)
	}
	if md := res.markdown(); !strings.Contains(md, "status-only") || !strings.Contains(md, "ConfigMaps") {
		t.Errorf("report:\n%s", md)
	}
}
