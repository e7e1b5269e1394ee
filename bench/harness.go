package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/testenv"
	"github.com/cluster-backup/cluster-backup/watcher"
)

type config struct {
	sizes           []int
	scenarios       map[string]bool
	latencyRate     int
	latencyDuration time.Duration
	latencyObjects  int
	latencyRuns     int
	statusObjects   int
	burstObjects    int
	burstUpdates    int
	bodyBytes       int
	concurrency     int // BATCH_SIZE, also the ceiling's concurrency
	repeats         int // service/ceiling pairs for sizes up to repeatUpTo
	repeatUpTo      int // the largest size whose runs are repeated
	store           string
	direct          bool // the service and the ceiling reach the store without the proxy
	debounce        time.Duration
	namespaces      int
	seeders         int
	viewKeys        int // keys of the point-in-time view scenario, five versions each
	historyObjects  int // objects of the ui and git scenarios' cluster
	historyChanged  int // of those, the ones with five versions
	foreignKeys     int // keys not the service's own under its prefix, in the foreign scenario
	out             string
}

func defaultConfig() config {
	return config{
		latencyRate:     100,
		latencyDuration: 60 * time.Second,
		latencyObjects:  1000,
		latencyRuns:     3,
		statusObjects:   1000,
		burstObjects:    10,
		burstUpdates:    20,
		bodyBytes:       2048,
		concurrency:     50,
		repeats:         3,
		repeatUpTo:      10000,
		store:           storeMinIO,
		debounce:        time.Second,
		namespaces:      10,
		seeders:         16,
		viewKeys:        10000,
		historyObjects:  50000,
		historyChanged:  10000,
		foreignKeys:     1000000,
		out:             "bench/results",
	}
}

const bucket = "bench"

// env is the real servers and the programs under measurement.
type env struct {
	cfg     config
	log     func(string, ...any)
	work    string
	kube    *testenv.Kube
	store   *store
	proxy   *proxy
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	s3      *minio.Client
	service string // binary
	naive   string // binary
	seeded  int
	runs    int
	// lastInitial is the cluster name of the latest initial backup, and
	// seededAtLastInitial the ConfigMaps it stored.
	lastInitial         string
	seededAtLastInitial int
	// baseWatches are the WATCHes open before any service ran.
	baseWatches float64
}

func run(ctx context.Context, cfg config, log func(string, ...any)) (*results, error) {
	e := &env{cfg: cfg, log: log}
	var err error
	if e.work, err = os.MkdirTemp("", "cluster-backup-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(e.work)
	if err := e.build(); err != nil {
		return nil, err
	}
	log("starting kube-apiserver + etcd and MinIO on 127.0.0.1")
	if e.kube, err = testenv.StartKube(ctx, testenv.KubeOptions{}); err != nil {
		return nil, err
	}
	defer e.kube.Stop()
	if e.store, err = e.startStore(ctx); err != nil {
		return nil, err
	}
	defer e.store.stop()
	if e.proxy, err = startProxy(e.store.server, bucket); err != nil {
		return nil, err
	}
	defer func() { _ = e.proxy.srv.Close() }()
	e.store.endpoint = e.proxy.addr
	if cfg.direct {
		e.store.endpoint = e.store.server
	}
	e.kube.Config.QPS, e.kube.Config.Burst = 2000, 4000
	e.cs = kubernetes.NewForConfigOrDie(e.kube.Config)
	e.dyn = dynamic.NewForConfigOrDie(e.kube.Config)
	// The ceiling's client keeps a connection per worker, as the service's
	// does (sink.MinIOOptions.Connections): the ceiling measures the store,
	// not connection setup.
	transport, err := minio.DefaultTransport(false)
	if err != nil {
		return nil, err
	}
	transport.MaxIdleConnsPerHost = max(transport.MaxIdleConnsPerHost, cfg.concurrency)
	if e.s3, err = minio.New(e.store.endpoint, &minio.Options{Creds: credentials.NewStaticV4(e.store.accessKey, e.store.secretKey, ""), Transport: transport, TrailingHeaders: true}); err != nil {
		return nil, err
	}
	if err := e.s3.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return nil, err
	}
	if err := e.s3.EnableVersioning(ctx, bucket); err != nil {
		return nil, fmt.Errorf("enable versioning on %s: %w", cfg.store, err)
	}
	for i := range cfg.namespaces {
		if err := e.namespace(ctx, fmt.Sprintf("bench-%02d", i)); err != nil {
			return nil, err
		}
	}
	if e.baseWatches, err = e.openWatches(ctx); err != nil {
		return nil, err
	}

	res := &results{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Config: cfg.describe(), Store: cfg.store, Direct: cfg.direct}
	return res, e.scenarios(ctx, res)
}

// scenarios runs the scenarios asked for, in order, into res.
func (e *env) scenarios(ctx context.Context, res *results) error {
	sizes := append([]int(nil), e.cfg.sizes...)
	sort.Ints(sizes)
	if e.cfg.scenarios["initial"] {
		for _, n := range sizes {
			r, err := e.initial(ctx, n)
			if err != nil {
				return fmt.Errorf("initial backup of %d: %w", n, err)
			}
			res.Initial = append(res.Initial, r)
		}
	}
	if e.cfg.scenarios["restore"] {
		r, err := e.restoreScenario(ctx)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		res.Restore = &r
	}
	if e.cfg.scenarios["foreign"] {
		r, err := e.foreignScenario(ctx)
		if err != nil {
			return fmt.Errorf("foreign keys: %w", err)
		}
		res.Foreign = &r
	}
	if e.cfg.scenarios["ui"] {
		r, err := e.uiScenario(ctx)
		if err != nil {
			return fmt.Errorf("web view: %w", err)
		}
		res.UI = &r
	}
	if e.cfg.scenarios["git"] {
		r, err := e.gitScenario(ctx, e.cfg.scenarios["ui"])
		if err != nil {
			return fmt.Errorf("git-sync: %w", err)
		}
		res.Git = &r
	}
	if e.cfg.scenarios["latency"] || e.cfg.scenarios["amplification"] {
		if err := e.seed(ctx, max(e.seeded, e.cfg.latencyObjects)); err != nil {
			return err
		}
		if err := e.steadyState(ctx, res); err != nil {
			return err
		}
	}
	return nil
}

// build compiles the service and the baseline once.
func (e *env) build() error {
	e.service = filepath.Join(e.work, "cluster-backup")
	e.naive = filepath.Join(e.work, "naive")
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("find the module: %w", err)
	}
	for out, pkg := range map[string]string{e.service: "./cmd/cluster-backup", e.naive: "./bench/naive"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = strings.TrimSpace(string(root))
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}

func (e *env) namespace(ctx context.Context, name string) error {
	_, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func cmName(i int) string { return fmt.Sprintf("cm-%06d", i) }

func (e *env) cmNamespace(i int) string { return fmt.Sprintf("bench-%02d", i%e.cfg.namespaces) }

// seed creates ConfigMaps of ~bodyBytes until there are n, with parallel
// clients (kubectl would take minutes for thousands).
func (e *env) seed(ctx context.Context, n int) error {
	if n <= e.seeded {
		return nil
	}
	start := time.Now()
	err := forEach(ctx, e.seeded, n, e.cfg.seeders, func(i int) error {
		_, err := e.cs.CoreV1().ConfigMaps(e.cmNamespace(i)).Create(ctx, e.configMap(i), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	e.log("seeded %d ConfigMaps of ~%d B in %s", n-e.seeded, e.cfg.bodyBytes, time.Since(start).Round(time.Millisecond))
	e.seeded = n
	return nil
}

// configMap is the i-th seeded ConfigMap: an application's properties file
// of ~bodyBytes, different in every object, as compressible as real
// configuration text (neither a repeated byte nor random noise).
func (e *env) configMap(i int) *corev1.ConfigMap {
	words := []string{"server", "client", "timeout", "retries", "cache", "pool", "max", "min", "enabled",
		"url", "path", "level", "feature", "region", "replica", "batch", "queue", "worker", "limit", "tls"}
	r := rand.New(rand.NewPCG(uint64(i), 42))
	var b strings.Builder
	for b.Len() < e.cfg.bodyBytes-250 {
		fmt.Fprintf(&b, "%s.%s.%s=%d\n", words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(100000))
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: cmName(i), Namespace: e.cmNamespace(i), Labels: map[string]string{"app": "bench", "shard": strconv.Itoa(i % 7)}},
		Data:       map[string]string{"index": strconv.Itoa(i), "application.properties": b.String(), "mode": "on"},
	}
}

// serviceConfig selects the bench namespaces' ConfigMaps and the status CRD.
func (e *env) serviceConfig() string {
	dir := filepath.Join(e.work, fmt.Sprintf("config-%d", e.runs))
	_ = os.MkdirAll(dir, 0o755)
	var ns []string
	for i := range e.cfg.namespaces {
		ns = append(ns, fmt.Sprintf("bench-%02d", i))
	}
	ns = append(ns, "bench-status")
	files := map[string]string{
		"filtering-mode":     "whitelist",
		"include-resources":  "configmaps",
		"include-crds":       "benchitems.bench.example.com",
		"include-namespaces": strings.Join(ns, "\n"),
	}
	for k, v := range files {
		_ = os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644)
	}
	return dir
}

// startService runs the real binary against the servers, through the proxy
// unless -direct.
func (e *env) startService(cluster string, extra map[string]string) (*process, error) {
	e.runs++
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"CLUSTER_NAME":      cluster,
		"KUBECONFIG":        e.kube.Kubeconfig,
		"MINIO_ENDPOINT":    e.store.endpoint,
		"MINIO_ACCESS_KEY":  e.store.accessKey,
		"MINIO_SECRET_KEY":  e.store.secretKey,
		"MINIO_BUCKET":      bucket,
		"MINIO_USE_SSL":     "false",
		"METRICS_ADDR":      fmt.Sprintf("127.0.0.1:%d", port),
		"BATCH_SIZE":        strconv.Itoa(e.cfg.concurrency),
		"DEBOUNCE":          e.cfg.debounce.String(),
		"SNAPSHOT_INTERVAL": "1h",
		"BACKUP_CONFIG_DIR": e.serviceConfig(),
	}
	for k, v := range extra {
		env[k] = v
	}
	return startProcess(e.service, []string{"run"}, env, filepath.Join(e.work, fmt.Sprintf("service-%d.log", e.runs)))
}

// waitIdle waits until the service's queue is empty and the PUT count has
// not moved for a debounce window and a half.
func (e *env) waitIdle(p *process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, err := e.puts()
	if err != nil {
		return err
	}
	since := time.Now()
	for {
		depth, err := p.metric("cluster_backup_queue_depth", nil)
		n, perr := e.puts()
		if perr != nil {
			return perr
		}
		if err == nil && depth == 0 && n == last && time.Since(since) > e.cfg.debounce*3/2 {
			return nil
		}
		if n != last {
			last, since = n, time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service not idle within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchesClosed waits until the API server holds no more open WATCHes on
// the measured types than before any service ran (its own controllers
// watch ConfigMaps): it counts a WATCH in apiserver_request_total only when
// the watch ends, which happens shortly after the process holding it exits.
func (e *env) watchesClosed(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		open, err := e.openWatches(ctx)
		if err != nil {
			return err
		}
		if open <= e.baseWatches {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v watches still open, %v before any service ran", open, e.baseWatches)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openWatches is the number of WATCH requests in progress on the measured
// types.
func (e *env) openWatches(ctx context.Context) (float64, error) {
	counts, err := e.apiserverMetric(ctx, "apiserver_longrunning_requests", "WATCH")
	open := 0.0
	for _, v := range counts {
		open += v
	}
	return open, err
}

// apiRequests scrapes the API server's request counters by verb and resource.
func (e *env) apiRequests(ctx context.Context) (map[string]float64, error) {
	return e.apiserverMetric(ctx, "apiserver_request_total", "LIST", "WATCH", "GET")
}

// apiserverMetric sums an API server metric for each verb on each measured
// type, keyed "VERB resource".
func (e *env) apiserverMetric(ctx context.Context, name string, verbs ...string) (map[string]float64, error) {
	body, err := e.cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, verb := range verbs {
		for _, res := range []string{"configmaps", "benchitems"} {
			v, err := testenv.SumMetric(bytes.NewReader(body), name, map[string]string{"verb": verb, "resource": res})
			if err != nil {
				return nil, err
			}
			out[verb+" "+res] = v
		}
	}
	return out, nil
}

// apiRequestsSince returns the requests made since before, once the watches
// of the service that made them have closed and been counted.
func (e *env) apiRequestsSince(ctx context.Context, before map[string]float64) (map[string]int, error) {
	if err := e.watchesClosed(ctx); err != nil {
		return nil, err
	}
	after, err := e.apiRequests(ctx)
	if err != nil {
		return nil, err
	}
	return diff(after, before), nil
}

func diff(after, before map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		out[k] = int(v - before[k])
	}
	return out
}

// ceiling PUTs n bodies of the service's size straight through the same
// proxy into the same MinIO at the same concurrency: what the store can take.
func (e *env) ceiling(ctx context.Context, n int, prefix string) (time.Duration, cpuTimes, error) {
	bodies, opts, err := e.serviceDocuments(ctx, n)
	if err != nil {
		return 0, nil, err
	}
	runtime.GC() // the lists' garbage is not collected on the ceiling's clock
	cpuBefore, err := serverCPU()
	if err != nil {
		return 0, nil, err
	}
	start := time.Now()
	err = forEach(ctx, 0, n, e.cfg.concurrency, func(i int) error {
		_, err := e.s3.PutObject(ctx, bucket, fmt.Sprintf("%s/%s/configmaps/%s.yaml", prefix, e.cmNamespace(i), cmName(i)),
			bytes.NewReader(bodies[i]), int64(len(bodies[i])), opts[i])
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	d := time.Since(start)
	cpuAfter, err := serverCPU()
	if err != nil {
		return 0, nil, err
	}
	return d, cpuAfter.since(cpuBefore), nil
}

// serviceDocuments are the documents the service writes for the first n
// seeded ConfigMaps, and the options it writes them with (sink.PutOptions):
// the live objects encoded as the caches encode them under the default
// rules, with their resourceVersion, UID, digest and the cluster's
// identity as metadata. The ceiling sends the same bytes and headers, all
// computed before its clock starts.
func (e *env) serviceDocuments(ctx context.Context, n int) ([][]byte, []minio.PutObjectOptions, error) {
	system, err := e.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	live := map[string]*unstructured.Unstructured{}
	list := e.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"})
	err = pager.New(func(ctx context.Context, opts metav1.ListOptions) (k8sruntime.Object, error) {
		return list.List(ctx, opts)
	}).EachListItem(ctx, metav1.ListOptions{}, func(obj k8sruntime.Object) error {
		u := obj.(*unstructured.Unstructured)
		live[u.GetNamespace()+"/"+u.GetName()] = u
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	encoding := watcher.EncodeOptions(filter.DefaultRules(), nil)
	bodies := make([][]byte, n)
	opts := make([]minio.PutObjectOptions, n)
	for i := range n {
		u, ok := live[e.cmNamespace(i)+"/"+cmName(i)]
		if !ok {
			return nil, nil, fmt.Errorf("ConfigMap %s/%s is not in the cluster", e.cmNamespace(i), cmName(i))
		}
		enc, err := encoding.Encode(u)
		if err != nil {
			return nil, nil, err
		}
		bodies[i] = enc.Body
		opts[i] = sink.PutOptions(object.Meta{
			ResourceVersion: u.GetResourceVersion(),
			UID:             string(u.GetUID()),
			APIVersion:      "v1",
			SHA256:          hex.EncodeToString(enc.Digest[:]),
			ClusterUID:      string(system.UID),
		})
	}
	return bodies, opts, nil
}

// forEach calls f for every i in [from, to) from workers goroutines and
// returns the first error; after an error the workers stop taking work.
func forEach(ctx context.Context, from, to, workers int, f func(i int) error) error {
	var next atomic.Int64
	next.Store(int64(from))
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for firstErr.Load() == nil && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return ctx.Err()
}

// initial measures the first backup of n ConfigMaps, the same-run ceiling,
// peak memory against the naive baseline, and API requests at start-up.
// On a small machine one run of either varies by a quarter; for sizes up to
// repeatUpTo, service and ceiling runs alternate cfg.repeats times, and the
// figure is the median of the pairs' ratios.
func (e *env) initial(ctx context.Context, n int) (initialResult, error) {
	if err := e.seed(ctx, n); err != nil {
		return initialResult{}, err
	}
	r := initialResult{N: n}
	repeats := 1
	if n <= e.cfg.repeatUpTo {
		repeats = max(1, e.cfg.repeats)
	}
	var serviceSecs, ceilingSecs, ratios, cpus []float64
	for rep := range repeats {
		e.lastInitial, e.seededAtLastInitial = fmt.Sprintf("initial-%d-%d", n, rep), n
		run, err := e.firstBackup(ctx, n, e.lastInitial)
		if err != nil {
			return r, err
		}
		d, ceilingCPU, err := e.ceiling(ctx, n, fmt.Sprintf("ceiling-%d-%d", n, rep))
		if err != nil {
			return r, err
		}
		if rep == 0 {
			r.PutsTotal, r.APIRequests = run.PutsTotal, run.APIRequests
			r.PackBytes, r.PackSeconds = run.PackBytes, run.PackSeconds
			r.BackupCPU, r.CeilingCPU = run.BackupCPU, ceilingCPU
		}
		r.PeakRSS = max(r.PeakRSS, run.PeakRSS)
		e.log("CPU by process: first backup %s; ceiling %s", run.BackupCPU, ceilingCPU)
		serviceSecs = append(serviceSecs, run.Seconds)
		cpus = append(cpus, run.CPUPerObject)
		ceilingSecs = append(ceilingSecs, d.Seconds())
		ratios = append(ratios, d.Seconds()/run.Seconds)
		e.log("initial backup of %d (run %d of %d): %.1fs, %d PUTs, peak RSS %s, CPU %.0f us/object, restore pack %s in %.2fs; raw PUT ceiling at concurrency %d: %.1fs; ratio %.2f",
			n, rep+1, repeats, run.Seconds, run.PutsTotal, mib(run.PeakRSS), run.CPUPerObject*1e6, mib(run.PackBytes), run.PackSeconds, e.cfg.concurrency, d.Seconds(), d.Seconds()/run.Seconds)
	}
	r.Runs = repeats
	r.Seconds, r.CeilingSeconds, r.RatioToCeiling = median(serviceSecs), median(ceilingSecs), median(ratios)
	r.CPUPerObject = median(cpus)
	r.ObjectsPerSecond = float64(n) / r.Seconds
	r.CeilingPerSecond = float64(n) / r.CeilingSeconds

	var err error
	if r.BaselineRSS, err = e.naiveRSS(); err != nil {
		return r, err
	}
	r.RSSRatio = float64(r.PeakRSS) / float64(r.BaselineRSS)
	e.log("naive informer baseline: peak RSS %s; ratio %.2f", mib(r.BaselineRSS), r.RSSRatio)
	return r, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// firstBackup runs the service under a new cluster name over n seeded
// ConfigMaps and measures its first backup: time from start until n keys
// are in the bucket, PUTs, peak RSS, and API requests at start-up.
func (e *env) firstBackup(ctx context.Context, n int, cluster string) (initialResult, error) {
	r := initialResult{N: n}
	if err := e.watchesClosed(ctx); err != nil {
		return r, err
	}
	apiBefore, err := e.apiRequests(ctx)
	if err != nil {
		return r, err
	}
	putsBefore, err := e.puts()
	if err != nil {
		return r, err
	}
	cpuBefore, err := serverCPU()
	if err != nil {
		return r, err
	}
	start := time.Now()
	p, err := e.startService(cluster, nil)
	if err != nil {
		return r, err
	}
	defer p.stop()
	for {
		puts, err := e.puts()
		if err != nil {
			return r, err
		}
		if puts-putsBefore >= int64(n) {
			break
		}
		select {
		case <-p.done:
			return r, fmt.Errorf("service exited")
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 15*time.Minute {
			return r, fmt.Errorf("only %d of %d written", puts-putsBefore, n)
		}
	}
	r.Seconds = time.Since(start).Seconds()
	cpuAfter, err := serverCPU()
	if err != nil {
		return r, err
	}
	r.BackupCPU = cpuAfter.since(cpuBefore)
	if r.CPUPerObject, err = p.cpuSeconds(); err != nil {
		return r, err
	}
	r.CPUPerObject /= float64(n)
	if err := p.waitPasses(1, 5*time.Minute); err != nil {
		return r, err
	}
	if err := e.waitIdle(p, 2*time.Minute); err != nil {
		return r, err
	}
	// The restore pack follows the first pass; its memory counts in the
	// peak and the restore scenario reads it.
	if r.PackBytes, r.PackSeconds, err = p.waitPack(2 * time.Minute); err != nil {
		return r, err
	}
	putsAfter, err := e.puts()
	if err != nil {
		return r, err
	}
	r.PutsTotal = int(putsAfter - putsBefore)
	if r.PeakRSS, err = p.peakRSS(); err != nil {
		return r, err
	}
	p.stop()
	if r.APIRequests, err = e.apiRequestsSince(ctx, apiBefore); err != nil {
		return r, err
	}
	return r, nil
}

// naiveRSS runs the baseline over the same resources until its caches sync.
func (e *env) naiveRSS() (int64, error) {
	e.runs++
	p, err := startProcess(e.naive, []string{"--kubeconfig", e.kube.Kubeconfig, "--resources", "v1/configmaps"},
		nil, filepath.Join(e.work, fmt.Sprintf("naive-%d.log", e.runs)))
	if err != nil {
		return 0, err
	}
	defer p.stop()
	select {
	case <-p.synced:
	case <-p.done:
		return 0, fmt.Errorf("baseline exited")
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("baseline did not sync")
	}
	// Let the heap settle as the service's did while it was measured.
	time.Sleep(2 * time.Second)
	return p.peakRSS()
}

var benchItems = schema.GroupVersionResource{Group: "bench.example.com", Version: "v1", Resource: "benchitems"}

// installStatusCRD installs a CRD with a status subresource and creates its
// objects, for the status-only scenario.
func (e *env) installStatusCRD(ctx context.Context, n int) error {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "benchitems.bench.example.com"},
		"spec": map[string]any{
			"group": "bench.example.com", "scope": "Namespaced",
			"names": map[string]any{"plural": "benchitems", "singular": "benchitem", "kind": "BenchItem"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := e.dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := e.namespace(ctx, "bench-status"); err != nil {
		return err
	}
	for i := range n {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "bench.example.com/v1", "kind": "BenchItem",
			"metadata": map[string]any{"name": fmt.Sprintf("item-%05d", i)},
			"spec":     map[string]any{"size": int64(i)},
		}}
		for {
			_, err := e.dyn.Resource(benchItems).Namespace("bench-status").Create(ctx, obj, metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				break
			}
			if !apierrors.IsNotFound(err) || ctx.Err() != nil {
				return err // NotFound: the CRD is not served yet
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func machine() string {
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(b), "processor\t:")
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]); len(f) >= 2 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d cores, %s, %s", cpus, mem, goVersion())
}
