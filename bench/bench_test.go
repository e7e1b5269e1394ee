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
	cfg.scenarios = map[string]bool{"initial": true, "restore": true, "latency": true, "amplification": true, "foreign": true, "ui": true, "git": true}
	cfg.viewKeys, cfg.foreignKeys = 200, 2000
	cfg.historyObjects, cfg.historyChanged = 300, 100
	cfg.latencyRate, cfg.latencyDuration, cfg.latencyObjects, cfg.latencyRuns = 20, 3*time.Second, 100, 1
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
	if i.CPUPerObject <= 0 {
		t.Errorf("no service CPU per object: %+v", i)
	}
	if i.APIRequests["GET configmaps"] != 0 {
		t.Errorf("per-object GETs at start: %v", i.APIRequests)
	}
	if l := res.Latency; l == nil || l.Landed != l.Updates || l.Updates == 0 || l.P99 <= 0 || l.WriteP50 <= 0 || l.Split == 0 || l.OwnP99 <= 0 || len(l.Runs) != 1 || l.Held <= 0 || l.ServiceCores <= 0 || l.NeedCores <= 0 {
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
	if x.RestoreCPU["cluster-backup"] <= 0 || x.RestoreCPU["kube-apiserver"] <= 0 || x.CeilingCPU["kube-apiserver"] <= 0 {
		t.Errorf("CPU by process: restore %v, ceiling %v", x.RestoreCPU, x.CeilingCPU)
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
	// The web view and git-sync: every page served, a change committed by
	// a poll that lists the journal and the key, and an idle poll that
	// lists the journal alone.
	if u := res.UI; u == nil || u.JournalEntries != 300+4*100 || u.FirstWarm <= 0 || u.HistoryCold <= 0 || u.TimelineCold <= 0 {
		t.Errorf("web view figures: %+v", u)
	}
	if g := res.Git; g == nil || g.Commits < 1 || g.ChangeLists < 1 || g.ChangeLists > 3 || g.IdleLists != 1 || g.IdleGets != 0 {
		t.Errorf("git-sync figures: %+v", g)
	}
	if md := res.markdown(); !strings.Contains(md, "status-only") || !strings.Contains(md, "ConfigMaps") {
		t.Errorf("report:\n%s", md)
	}
}

// TestDirectSmoke runs the first backup against MinIO on tmpfs without the
// proxy: the PUTs are counted by MinIO itself.
func TestDirectSmoke(t *testing.T) {
	testenv.Require(t, "etcd", "kube-apiserver", "minio")
	cfg := defaultConfig()
	cfg.sizes, cfg.repeats = []int{300}, 1
	cfg.scenarios = map[string]bool{"initial": true}
	cfg.store, cfg.direct = storeMinIOTmpfs, true
	cfg.out = t.TempDir()
	if err := cfg.checkStoreConfig(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	// 300 ConfigMaps and the identity marker, as MinIO counted them, and
	// the change journal's objects: one per second with writes, at most
	// two in a backup of well under a second.
	if i := res.Initial[0]; i.PutsTotal < 301 || i.PutsTotal > 303 || i.CeilingPerSecond <= 0 || i.CPUPerObject <= 0 {
		t.Errorf("initial figures: %+v", i)
	}
	if md := res.markdown(); !strings.Contains(md, "tmpfs reached directly") {
		t.Errorf("report does not say how the store was reached:\n%s", md)
	}
}

func TestStoreConfig(t *testing.T) {
	for _, tc := range []struct {
		store     string
		direct    bool
		scenarios string
		ok        bool
	}{
		{storeMinIO, false, "initial,restore,latency", true},
		{storeSeaweedFS, false, "initial,latency", true},
		{storeMinIOTmpfs, true, "initial", true},
		{storeSeaweedFS, true, "initial", false},
		{storeMinIOTmpfs, true, "initial,latency", false},
		{"ceph", false, "initial", false},
	} {
		cfg := defaultConfig()
		cfg.store, cfg.direct, cfg.scenarios = tc.store, tc.direct, map[string]bool{}
		for _, s := range strings.Split(tc.scenarios, ",") {
			cfg.scenarios[s] = true
		}
		if err := cfg.checkStoreConfig(); (err == nil) != tc.ok {
			t.Errorf("%s direct=%v %s: %v", tc.store, tc.direct, tc.scenarios, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	comm, ppid, secs, ok := parseStat("4242 (kube-apiserver x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0")
	if !ok || comm != "kube-apiserver x" || ppid != 17 || secs != 3 {
		t.Errorf("parseStat: %q %d %v %v", comm, ppid, secs, ok)
	}
	if _, _, _, ok := parseStat("garbage"); ok {
		t.Error("parseStat accepted garbage")
	}
}

func TestLatencyVerdictNamesASaturatedMachine(t *testing.T) {
	cpu := cpuTimes{"kube-apiserver": 36, "minio": 21, "etcd": 5.5, "bench": 9, serviceProcess: 6.5}
	rest, own := cpu.coresAt(serviceProcess, 12000, 500)
	if rest < 2.97 || rest > 2.99 || own < 0.27 || own > 0.28 {
		t.Fatalf("coresAt: rest %.3f, own %.3f; want 2.98 and 0.27", rest, own)
	}
	l := &latencyResult{Rate: 500, P50: 3, P99: 12, OwnP99: 8, Cores: 2, NeedCores: rest, ServiceCores: own}
	if _, v := latencyTarget(l); !strings.HasPrefix(v, "**not met**: the machine is saturated") || !strings.Contains(v, "need 3.0 cores and the service 0.3, of 2") {
		t.Errorf("saturated verdict: %q", v)
	}
	// A machine with cores to spare: a miss is the service's own.
	l.NeedCores, l.ServiceCores = 0.8, 0.1
	if _, v := latencyTarget(l); v != "**not met**" {
		t.Errorf("verdict with cores to spare: %q", v)
	}
	l.P50, l.P99, l.OwnP99 = 0.01, 0.1, 0.09
	l.NeedCores = 3
	if _, v := latencyTarget(l); v != "met" {
		t.Errorf("a met target on a saturated machine: %q", v)
	}
}
