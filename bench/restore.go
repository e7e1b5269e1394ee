package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	goruntime "runtime"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
)

type restoreResult struct {
	Objects          int            `json:"objects"` // ConfigMaps restored
	Seconds          float64        `json:"seconds"`
	ObjectsPerSecond float64        `json:"objects_per_second"`
	CeilingSeconds   float64        `json:"ceiling_seconds"`
	CeilingPerSecond float64        `json:"ceiling_per_second"`
	RatioToCeiling   float64        `json:"ratio_to_ceiling"`
	PeakRSS          int64          `json:"peak_rss_bytes"`
	RerunSeconds     float64        `json:"rerun_seconds"`
	RerunWrites      map[string]int `json:"rerun_api_writes"`
	DiffSeconds      float64        `json:"diff_seconds"`
	DiffRequests     map[string]int `json:"diff_api_requests"`
	DiffPeakRSS      int64          `json:"diff_peak_rss_bytes"`
	ViewKeys         int            `json:"view_keys"`
	ViewVersions     int            `json:"view_versions"`
	ViewSeconds      float64        `json:"view_seconds"`
	ViewListRequests int64          `json:"view_list_requests"`
	ViewPeakRSS      int64          `json:"view_peak_rss_bytes"`
	// CPU seconds by process during the restore and during its ceiling:
	// where the time of a CPU-bound restore goes.
	RestoreCPU cpuTimes `json:"restore_cpu_seconds"`
	CeilingCPU cpuTimes `json:"ceiling_cpu_seconds"`
	// Where the restore read its documents: the restore pack, or one GET
	// per document.
	FromPack int `json:"documents_from_pack"`
	FromKeys int `json:"documents_from_keys"`
}

// packLine is the restore's line on where its documents came from.
var packLine = regexp.MustCompile(`(\d+) documents read from the restore pack of \S+, (\d+) from their own keys`)

// cbNamespaces are the seeded namespaces as a -n list.
func (e *env) cbNamespaces() []string {
	var args []string
	for i := range e.cfg.namespaces {
		args = append(args, "-n", fmt.Sprintf("bench-%02d", i))
	}
	return args
}

// command runs one browsing or restore command of the service's binary
// against the bench servers, straight to MinIO, and returns its stderr and
// peak RSS. The restore's ceiling reads nothing from the bucket, so the
// restore does not pay for the counting proxy either. The peak
// is the kernel's VmHWM of the process, polled while it runs: rusage's
// maxrss would report the bench's own size, which a child inherits at the
// fork before its exec.
func (e *env) command(cluster string, args ...string) (string, int64, error) {
	out, rss, _, err := e.commandVia(e.store.server, cluster, args...)
	return out, rss, err
}

// commandVia is command with the store at endpoint (the proxy, where its
// requests are counted); it also returns the CPU seconds the command used.
func (e *env) commandVia(endpoint, cluster string, args ...string) (string, int64, float64, error) {
	cmd := exec.Command(e.service, args...)
	cmd.Env = []string{
		"CLUSTER_NAME=" + cluster, "KUBECONFIG=" + e.kube.Kubeconfig,
		"MINIO_ENDPOINT=" + endpoint, "MINIO_ACCESS_KEY=" + e.store.accessKey, "MINIO_SECRET_KEY=" + e.store.secretKey,
		"MINIO_BUCKET=" + bucket, "MINIO_USE_SSL=false", "HOME=" + e.work,
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", 0, 0, err
	}
	p := &process{cmd: cmd}
	done := make(chan struct{})
	var rss int64
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if v, err := p.peakRSS(); err == nil {
				rss = max(rss, v)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	<-polled
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if err != nil {
		return stderr.String(), rss, cpu, fmt.Errorf("%s %s: %w\n%s", filepath.Base(e.service), strings.Join(args, " "), err, lastLines(stderr.String(), 10))
	}
	return stderr.String(), rss, cpu, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// restoreScenario restores the last initial backup into new namespaces and
// compares it with the ceiling: parallel server-side apply of the same
// ConfigMaps at the same concurrency, in no order. Then a second restore
// (no writes wanted), a diff of the backup against the live namespaces, and
// a point-in-time view of keys with five versions each.
func (e *env) restoreScenario(ctx context.Context) (restoreResult, error) {
	var r restoreResult
	if e.lastInitial == "" {
		return r, errors.New("the restore scenario restores the last initial backup: run it with the initial scenario")
	}
	r.Objects = e.seededAtLastInitial
	mapping := []string{"--parallel", fmt.Sprint(e.cfg.concurrency)}
	for i := range e.cfg.namespaces {
		mapping = append(mapping, "--namespace-mapping", fmt.Sprintf("bench-%02d:restored-%02d", i, i))
	}
	args := append(append([]string{"restore"}, e.cbNamespaces()...), mapping...)
	if err := e.restoreAgainstCeiling(ctx, &r, args); err != nil {
		return r, err
	}

	writes := func() (map[string]float64, error) {
		return e.apiserverMetric(ctx, "apiserver_request_total", "PATCH", "POST", "PUT", "DELETE")
	}
	before, err := writes()
	if err != nil {
		return r, err
	}
	start := time.Now()
	if _, _, err := e.command(e.lastInitial, args...); err != nil {
		return r, err
	}
	r.RerunSeconds = time.Since(start).Seconds()
	after, err := writes()
	if err != nil {
		return r, err
	}
	r.RerunWrites = diff(after, before)
	e.log("the same restore again: %.1fs, API writes %v", r.RerunSeconds, r.RerunWrites)

	reqBefore, err := e.apiRequests(ctx)
	if err != nil {
		return r, err
	}
	start = time.Now()
	if _, r.DiffPeakRSS, err = e.command(e.lastInitial, append([]string{"diff"}, e.cbNamespaces()...)...); err != nil {
		return r, fmt.Errorf("diff of an unchanged cluster: %w", err)
	}
	r.DiffSeconds = time.Since(start).Seconds()
	reqAfter, err := e.apiRequests(ctx)
	if err != nil {
		return r, err
	}
	r.DiffRequests = diff(reqAfter, reqBefore)
	e.log("diff of %d objects against the live cluster: %.1fs, API requests %v", r.Objects, r.DiffSeconds, r.DiffRequests)
	return r, e.viewScenario(ctx, &r)
}

// restoreAgainstCeiling times the restore and its ceiling, with the CPU
// each process used during each.
func (e *env) restoreAgainstCeiling(ctx context.Context, r *restoreResult, args []string) error {
	cpuBefore, err := serverCPU()
	if err != nil {
		return err
	}
	start := time.Now()
	stderr, rss, cpu, err := e.commandVia(e.store.server, e.lastInitial, args...)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "restore: ") {
			e.log("%s", line)
		}
	}
	if m := packLine.FindStringSubmatch(stderr); m != nil {
		r.FromPack, _ = strconv.Atoi(m[1])
		r.FromKeys, _ = strconv.Atoi(m[2])
	} else {
		r.FromKeys = r.Objects
	}
	r.Seconds, r.PeakRSS = time.Since(start).Seconds(), rss
	r.ObjectsPerSecond = float64(r.Objects) / r.Seconds
	cpuAfter, err := serverCPU()
	if err != nil {
		return err
	}
	r.RestoreCPU = cpuAfter.since(cpuBefore)
	r.RestoreCPU["cluster-backup"] = cpu
	ceiling, err := e.applyCeiling(ctx, r.Objects)
	if err != nil {
		return err
	}
	cpuCeiling, err := serverCPU()
	if err != nil {
		return err
	}
	r.CeilingCPU = cpuCeiling.since(cpuAfter)
	r.CeilingSeconds = ceiling.Seconds()
	r.CeilingPerSecond = float64(r.Objects) / r.CeilingSeconds
	r.RatioToCeiling = r.CeilingSeconds / r.Seconds
	e.log("restore of %d ConfigMaps: %.1fs (%.0f/s, peak RSS %s); parallel server-side apply ceiling: %.1fs (%.0f/s); ratio %.2f",
		r.Objects, r.Seconds, r.ObjectsPerSecond, mib(r.PeakRSS), r.CeilingSeconds, r.CeilingPerSecond, r.RatioToCeiling)
	e.log("CPU during the restore: %v; during the ceiling: %v", r.RestoreCPU, r.CeilingCPU)
	return nil
}

// applyCeiling server-side applies n ConfigMaps of the seeded kind into
// ceiling namespaces, concurrency at a time: what the API server takes.
func (e *env) applyCeiling(ctx context.Context, n int) (time.Duration, error) {
	objs := make([]*unstructured.Unstructured, n)
	for i := range n {
		cm := e.configMap(i)
		cm.Namespace = fmt.Sprintf("ceiling-%02d", i%e.cfg.namespaces)
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cm)
		if err != nil {
			return 0, err
		}
		objs[i] = &unstructured.Unstructured{Object: u}
		objs[i].SetAPIVersion("v1")
		objs[i].SetKind("ConfigMap")
		unstructured.RemoveNestedField(objs[i].Object, "metadata", "creationTimestamp")
	}
	for i := range e.cfg.namespaces {
		if err := e.namespace(ctx, fmt.Sprintf("ceiling-%02d", i)); err != nil {
			return 0, err
		}
	}
	res := e.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"})
	next := make(chan *unstructured.Unstructured)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range e.cfg.concurrency {
		wg.Go(func() {
			for o := range next {
				_, err := res.Namespace(o.GetNamespace()).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "bench", Force: true})
				if err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, o := range objs {
		next <- o
	}
	close(next)
	wg.Wait()
	return time.Since(start), firstErr
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// viewScenario stores keys with five versions each under a cluster of its
// own and times resolving the view at a time between the third and the
// fourth version.
func (e *env) viewScenario(ctx context.Context, r *restoreResult) error {
	const versions = 5
	keys := e.cfg.viewKeys
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "view"}
	var middle time.Time
	for v := range versions {
		if err := e.putAll(ctx, keys, func(i int) (string, []byte) {
			ref := object.Ref{Resource: "configmaps", Namespace: e.cmNamespace(i), Name: cmName(i)}
			return layout.Key(ref), fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  version: %q\n", cmName(i), fmt.Sprint(v))
		}); err != nil {
			return err
		}
		if v == 2 {
			// The store's times have millisecond resolution: step the
			// clock past them on both sides of the chosen time.
			nextMillisecond()
			middle = time.Now().UTC()
			nextMillisecond()
		}
	}
	lists := e.proxy.lists.Load()
	start := time.Now()
	var err error
	if _, r.ViewPeakRSS, _, err = e.commandVia(e.proxy.addr, "view", "ls", "-A", "-o", "name", "--at", middle.Format(time.RFC3339Nano)); err != nil {
		return err
	}
	r.ViewSeconds = time.Since(start).Seconds()
	r.ViewListRequests = e.proxy.lists.Load() - lists
	r.ViewKeys, r.ViewVersions = keys, keys*versions
	e.log("point-in-time view of %d keys with %d versions each: %.1fs, %d list requests", keys, versions, r.ViewSeconds, r.ViewListRequests)
	return nil
}

// nextMillisecond returns once the clock has moved on by two milliseconds.
func nextMillisecond() {
	start := time.Now().Truncate(time.Millisecond)
	for time.Now().Truncate(time.Millisecond).Sub(start) < 2*time.Millisecond {
		goruntime.Gosched()
	}
}

// putAll stores n documents straight into the bucket, concurrency at a time.
func (e *env) putAll(ctx context.Context, n int, doc func(i int) (string, []byte)) error {
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range e.cfg.concurrency {
		wg.Go(func() {
			for i := range next {
				key, body := doc(i)
				meta := object.Meta{APIVersion: "v1", SHA256: object.Digest(body)}
				_, err := e.s3.PutObject(ctx, bucket, key, bytes.NewReader(body), int64(len(body)), sink.PutOptions(meta))
				if err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return firstErr
}
