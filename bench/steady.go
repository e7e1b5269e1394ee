package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// steadyState runs the always-on scenarios against one service: change
// latency, bursts, status-only updates, a snapshot pass's API load and a
// restart over an unchanged cluster.
func (e *env) steadyState(ctx context.Context, res *results) error {
	cluster := "steady"
	if e.lastInitial != "" {
		// The largest initial run stored every ConfigMap: reuse its prefix,
		// so this service starts over an unchanged bucket.
		cluster = e.lastInitial
	}
	extra := map[string]string{"SNAPSHOT_INTERVAL": "20s"}
	p, err := e.startService(cluster, extra)
	if err != nil {
		return err
	}
	defer p.stop()
	defer func() { p.stop() }()
	if err := p.waitPasses(1, 5*time.Minute); err != nil {
		return err
	}
	if err := e.waitIdle(p, 2*time.Minute); err != nil {
		return err
	}

	if e.cfg.scenarios["latency"] {
		lat, err := e.latency(ctx, p)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		res.Latency = &lat
	}
	if !e.cfg.scenarios["amplification"] {
		return nil
	}
	amp := &amplification{}
	res.Amplification = amp
	for _, step := range []func(context.Context, *process, *amplification) error{e.bursts, e.statusOnly, e.passLoad} {
		if err := step(ctx, p, amp); err != nil {
			return err
		}
	}
	p.stop()
	return e.restart(ctx, cluster, extra, amp)
}

// bursts updates burstObjects objects burstUpdates times each inside one
// debounce window and counts the PUTs.
func (e *env) bursts(ctx context.Context, p *process, amp *amplification) error {
	if err := e.seed(ctx, e.cfg.latencyObjects+e.cfg.burstObjects); err != nil {
		return err
	}
	if err := e.waitIdle(p, 2*time.Minute); err != nil {
		return err
	}
	perKey := map[string]int{}
	var mu sync.Mutex
	e.proxy.watchPuts(func(put landedPut) {
		mu.Lock()
		perKey[put.key]++
		mu.Unlock()
	})
	for j := range e.cfg.burstObjects {
		i := e.cfg.latencyObjects + j
		for u := range e.cfg.burstUpdates {
			patch := fmt.Sprintf(`{"data":{"burst":"%d"}}`, u)
			if _, err := e.cs.CoreV1().ConfigMaps(e.cmNamespace(i)).Patch(ctx, cmName(i), types.MergePatchType, []byte(patch), metav1PatchOptions()); err != nil {
				return err
			}
		}
	}
	if err := e.waitIdle(p, time.Minute); err != nil {
		return err
	}
	e.proxy.watchPuts(nil)
	mu.Lock()
	for _, n := range perKey {
		amp.BurstPuts += n
		amp.BurstMaxPerObject = max(amp.BurstMaxPerObject, n)
	}
	mu.Unlock()
	amp.BurstObjects, amp.BurstUpdates = e.cfg.burstObjects, e.cfg.burstUpdates
	e.log("bursts: %d objects x %d updates -> %d PUTs (max %d per object)", amp.BurstObjects, amp.BurstUpdates, amp.BurstPuts, amp.BurstMaxPerObject)
	return nil
}

// statusOnly counts the PUTs that status-only updates of objects with a
// status subresource cause (none are wanted).
func (e *env) statusOnly(ctx context.Context, p *process, amp *amplification) error {
	before := e.proxy.puts.Load()
	if err := e.installStatusCRD(ctx, e.cfg.statusObjects); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.proxy.puts.Load()-before < int64(e.cfg.statusObjects) {
		if time.Now().After(deadline) {
			return fmt.Errorf("status objects not backed up: %d of %d", e.proxy.puts.Load()-before, e.cfg.statusObjects)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.waitIdle(p, time.Minute); err != nil {
		return err
	}
	unchanged := func() float64 {
		v, _ := p.metric("cluster_backup_resources_total", map[string]string{"resource": "benchitems.bench.example.com", "action": "unchanged"})
		return v
	}
	u0, before := unchanged(), e.proxy.puts.Load()
	for i := range e.cfg.statusObjects {
		patch := fmt.Sprintf(`{"status":{"observed":%d,"phase":"Ready"}}`, time.Now().UnixNano())
		if _, err := e.dyn.Resource(benchItems).Namespace("bench-status").Patch(ctx, fmt.Sprintf("item-%05d", i), types.MergePatchType, []byte(patch), metav1PatchOptions(), "status"); err != nil {
			return err
		}
	}
	deadline = time.Now().Add(2 * time.Minute)
	for unchanged()-u0 < float64(e.cfg.statusObjects) {
		if time.Now().After(deadline) {
			return fmt.Errorf("status updates not all seen: %v of %d", unchanged()-u0, e.cfg.statusObjects)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := e.waitIdle(p, time.Minute); err != nil {
		return err
	}
	amp.StatusUpdates = e.cfg.statusObjects
	amp.StatusPuts = int(e.proxy.puts.Load() - before)
	e.log("status-only: %d updates -> %d PUTs", amp.StatusUpdates, amp.StatusPuts)
	return nil
}

// passLoad counts the API requests of one snapshot pass: it reads the
// caches, not the API server.
func (e *env) passLoad(ctx context.Context, p *process, amp *amplification) error {
	n := p.passCount()
	if err := p.waitPasses(n+1, 2*time.Minute); err != nil {
		return err
	}
	apiBefore, err := e.apiRequests(ctx)
	if err != nil {
		return err
	}
	if err := p.waitPasses(n+2, 2*time.Minute); err != nil {
		return err
	}
	apiAfter, err := e.apiRequests(ctx)
	if err != nil {
		return err
	}
	amp.PassAPIRequests = diff(apiAfter, apiBefore)
	e.log("a snapshot pass: API requests %v", amp.PassAPIRequests)
	return nil
}

// restart counts the PUTs and API requests of a restart over an unchanged
// cluster, once the previous service has stopped.
func (e *env) restart(ctx context.Context, cluster string, extra map[string]string, amp *amplification) error {
	if err := e.watchesClosed(ctx); err != nil {
		return err
	}
	before := e.proxy.puts.Load()
	apiBefore, err := e.apiRequests(ctx)
	if err != nil {
		return err
	}
	p, err := e.startService(cluster, extra)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := p.waitPasses(1, 5*time.Minute); err != nil {
		return err
	}
	if err := e.waitIdle(p, time.Minute); err != nil {
		return err
	}
	amp.RestartPuts = int(e.proxy.puts.Load() - before)
	p.stop()
	if amp.RestartAPIRequests, err = e.apiRequestsSince(ctx, apiBefore); err != nil {
		return err
	}
	e.log("restart over an unchanged cluster: %d PUTs; API requests %v", amp.RestartPuts, amp.RestartAPIRequests)
	return nil
}

// latency runs the change-latency scenario latencyRuns times and judges
// the median run (by p99); every run is reported.
func (e *env) latency(ctx context.Context, p *process) (latencyResult, error) {
	var runs []latencyResult
	for i := range max(e.cfg.latencyRuns, 1) {
		r, err := e.latencyOnce(ctx, p)
		if err != nil {
			return r, err
		}
		e.log("latency run %d of %d: p50 %.3fs p99 %.3fs", i+1, e.cfg.latencyRuns, r.P50, r.P99)
		runs = append(runs, r)
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b latencyResult) int { return cmp.Compare(a.P99, b.P99) })
	median := sorted[len(sorted)/2]
	for _, r := range runs {
		median.Runs = append(median.Runs, latencyRun{P50: r.P50, P99: r.P99, OwnP99: r.OwnP99, DeliveryP99: r.DeliveryP99, Updates: r.Updates, Puts: r.Puts, Held: r.Held, NeedCores: r.NeedCores + r.ServiceCores})
	}
	return median, nil
}

// latencyOnce makes latencyRate updates per second for latencyDuration,
// spread over latencyObjects, and times each from the API server's answer
// to the proxy seeing the store accept a PUT of that state or a newer one.
// A watch of the bench's own on the same API server splits that time, for
// the updates of one namespace, into the API server's delivery (its answer
// to the event reaching a watcher) and the service's own (the event to the
// store's answer).
func (e *env) latencyOnce(ctx context.Context, p *process) (latencyResult, error) {
	t := &landings{waiting: map[string][]pending{}, seen: map[string]time.Time{}, last: map[string]landedPut{}}
	stopWatch, err := e.watchDeliveries(ctx, t)
	if err != nil {
		return latencyResult{}, err
	}
	defer stopWatch()
	e.proxy.watchPuts(t.landed)
	defer e.proxy.watchPuts(nil)

	h0, err := histogram(p, "cluster_backup_change_latency_seconds")
	if err != nil {
		return latencyResult{}, err
	}
	puts0 := e.proxy.puts.Load()
	held, cpu, err := e.generate(ctx, t)
	if err != nil {
		return latencyResult{}, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !t.allLanded() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	puts := e.proxy.puts.Load() - puts0
	h1, err := histogram(p, "cluster_backup_change_latency_seconds")
	if err != nil {
		return latencyResult{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var samples, before, writes, delivery, own []float64
	for _, l := range t.records {
		samples = append(samples, max(0, l.stored.Sub(l.answered).Seconds()))
		// The watch can beat the generator to the API server's answer.
		before = append(before, max(0, l.began.Sub(l.answered).Seconds()))
		writes = append(writes, l.stored.Sub(l.began).Seconds())
		if seen, ok := t.seen[l.key]; ok {
			delivery = append(delivery, max(0, seen.Sub(l.answered).Seconds()))
			own = append(own, max(0, l.stored.Sub(seen).Seconds()))
		}
	}
	for _, s := range [][]float64{samples, before, writes, delivery, own} {
		sort.Float64s(s)
	}
	service := h1.delta(h0)
	r := latencyResult{
		Updates: t.sent, Landed: len(samples), Rate: e.cfg.latencyRate, Seconds: e.cfg.latencyDuration.Seconds(),
		Objects: e.cfg.latencyObjects, Debounce: e.cfg.debounce.Seconds(),
		P50: quantile(samples, 0.50), P95: quantile(samples, 0.95), P99: quantile(samples, 0.99), Max: quantile(samples, 1),
		ServiceP50: service.quantile(0.50), ServiceP95: service.quantile(0.95), ServiceP99: service.quantile(0.99),
		BeforeWriteP50: quantile(before, 0.50), BeforeWriteP99: quantile(before, 0.99),
		WriteP50: quantile(writes, 0.50), WriteP99: quantile(writes, 0.99),
		DeliveryP50: quantile(delivery, 0.50), DeliveryP99: quantile(delivery, 0.99),
		OwnP50: quantile(own, 0.50), OwnP99: quantile(own, 0.99), Split: len(own), Puts: int(puts),
		Held: held, CPU: cpu, Cores: runtime.NumCPU(),
	}
	r.NeedCores, r.ServiceCores = cpu.coresAt(serviceProcess, t.sent, e.cfg.latencyRate)
	e.log("change latency over %d updates (%d landed, %d PUTs): p50 %.3fs p95 %.3fs p99 %.3fs; the service's histogram: p50 %.3fs p99 %.3fs",
		r.Updates, r.Landed, r.Puts, r.P50, r.P95, r.P99, r.ServiceP50, r.ServiceP99)
	e.log("whose time: the API server's delivery p50 %.3fs p99 %.3fs; the service's own (event to stored) p50 %.3fs p99 %.3fs, over %d updates; the write alone p50 %.3fs p99 %.3fs",
		r.DeliveryP50, r.DeliveryP99, r.OwnP50, r.OwnP99, r.Split, r.WriteP50, r.WriteP99)
	if r.Landed < r.Updates {
		return r, fmt.Errorf("%d of %d updates never landed: %s", r.Updates-r.Landed, r.Updates, t.missing(5))
	}
	return r, nil
}

// watchDeliveries watches the ConfigMaps of one namespace (a tenth of the
// updates: a sample that costs the API server and the bench little) from
// now on and records in t when each of their versions reached this watcher.
func (e *env) watchDeliveries(ctx context.Context, t *landings) (stop func(), err error) {
	clients, err := e.loadClients(1)
	if err != nil {
		return nil, err
	}
	cms := clients[0].CoreV1().ConfigMaps(e.cmNamespace(0))
	list, err := cms.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok {
				t.delivered(cm.Namespace+"/configmaps/"+cm.Name+".yaml", cm.ResourceVersion, time.Now())
			}
		}
	}()
	return func() { w.Stop(); <-done }, nil
}

// generate updates one ConfigMap latencyRate times a second, round robin
// over latencyObjects, for latencyDuration, and records each answer in t.
// It writes as controllers do: whole objects, in protobuf. The updates are
// paced by the clock (every 10 ms, those due since the start), carried by a
// pool of workers spread over several clients, each with a connection of
// its own (one HTTP/2 connection caps the streams in flight), and retried
// with backoff when the API server fails one. It returns the rate held and
// the CPU each process used meanwhile.
func (e *env) generate(ctx context.Context, t *landings) (held float64, cpu cpuTimes, err error) {
	clients, err := e.loadClients(generatorClients)
	if err != nil {
		return 0, nil, err
	}
	objects := make([]*corev1.ConfigMap, e.cfg.latencyObjects)
	for i := range objects {
		objects[i] = e.configMap(i)
	}
	due := make(chan int, e.cfg.latencyRate) // a second of backlog at most
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for w := range generatorWorkers {
		cs := clients[w%len(clients)]
		wg.Go(func() {
			for seq := range due {
				if err := e.update(ctx, cs, t, objects, seq); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	cpuBefore, err := serverCPU()
	if err != nil {
		return 0, nil, err
	}
	start, sent, late := time.Now(), 0, 0
	tick := time.NewTicker(10 * time.Millisecond)
	for now := start; now.Sub(start) < e.cfg.latencyDuration; now = <-tick.C {
		for target := int(now.Sub(start).Seconds() * float64(e.cfg.latencyRate)); sent < target; sent++ {
			select {
			case due <- sent:
			default:
				late++ // every worker busy and a second queued: the API server is behind
				due <- sent
			}
		}
	}
	tick.Stop()
	close(due)
	wg.Wait()
	took := time.Since(start)
	cpuAfter, err := serverCPU()
	if err != nil {
		return 0, nil, err
	}
	held, cpu = float64(sent)/took.Seconds(), cpuAfter.since(cpuBefore)
	need, own := cpu.coresAt(serviceProcess, sent, e.cfg.latencyRate)
	e.log("load: %d updates in %.1fs (%.0f/s asked, %.0f/s held), %d queued behind a full second, %d failed after retries; CPU %v; at %d/s the rest need %.2f cores and the service %.2f, of %d",
		sent, took.Seconds(), float64(e.cfg.latencyRate), held, late, failed.Load(), cpu, e.cfg.latencyRate, need, own, runtime.NumCPU())
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, nil, fmt.Errorf("%d updates failed: %w", failed.Load(), err)
	}
	return held, cpu, nil
}

const (
	generatorClients = 8   // connections to the API server
	generatorWorkers = 128 // updates in flight at most
)

// loadClients are n clients of the API server that speak protobuf, each
// with a connection of its own: a Dial function keeps client-go from
// sharing one transport.
func (e *env) loadClients(n int) ([]kubernetes.Interface, error) {
	out := make([]kubernetes.Interface, n)
	for i := range out {
		cfg := rest.CopyConfig(e.kube.Config)
		cfg.QPS, cfg.Burst = -1, 0
		cfg.ContentType = kruntime.ContentTypeProtobuf
		cfg.AcceptContentTypes = kruntime.ContentTypeProtobuf + "," + kruntime.ContentTypeJSON
		cfg.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		out[i] = cs
	}
	return out, nil
}

// update makes update seq of the latency scenario, an unconditional update
// of the seeded object with a new stamp, and records the API server's
// answer, retrying with backoff while the server fails it.
func (e *env) update(ctx context.Context, cs kubernetes.Interface, t *landings, objects []*corev1.ConfigMap, seq int) error {
	obj := seq % e.cfg.latencyObjects
	next := objects[obj].DeepCopy()
	next.Data["stamp"] = strconv.Itoa(seq)
	var cm *corev1.ConfigMap
	err := retry.OnError(wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6},
		func(error) bool { return ctx.Err() == nil },
		func() (err error) {
			cm, err = cs.CoreV1().ConfigMaps(e.cmNamespace(obj)).Update(ctx, next, metav1.UpdateOptions{FieldManager: "bench"})
			return err
		})
	if err != nil {
		return err
	}
	rv, _ := strconv.ParseInt(cm.ResourceVersion, 10, 64)
	// Keys differ only in their cluster segment: match on the rest.
	t.sentAt(fmt.Sprintf("%s/configmaps/%s.yaml", e.cmNamespace(obj), cmName(obj)), rv, time.Now())
	return nil
}

// pending is an update the API server accepted and the store has not yet.
type pending struct {
	rv int64
	at time.Time
}

// landing is one update and the PUT that stored it.
type landing struct {
	key                     string // below the cluster segment, @ the update's resourceVersion
	answered, began, stored time.Time
}

// landings matches the store's PUTs to the updates they carry.
type landings struct {
	mu      sync.Mutex
	waiting map[string][]pending // by key below the cluster segment
	records []landing
	seen    map[string]time.Time // when the bench's watch saw key@rv
	last    map[string]landedPut // the newest PUT of each key
	sent    int
}

func (t *landings) sentAt(key string, rv int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent++
	// The store can hold the update before the generator hears the API
	// server's answer.
	if last := t.last[key]; last.resourceVersion != "" {
		if stored, _ := strconv.ParseInt(last.resourceVersion, 10, 64); stored >= rv {
			t.records = append(t.records, landing{key: key + "@" + strconv.FormatInt(rv, 10), answered: at, began: last.began, stored: last.at})
			return
		}
	}
	t.waiting[key] = append(t.waiting[key], pending{rv: rv, at: at})
}

func (t *landings) delivered(key, rv string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen[key+"@"+rv] = at
}

// landed records every update of the key at or below the stored rv.
func (t *landings) landed(put landedPut) {
	r, err := strconv.ParseInt(put.resourceVersion, 10, 64)
	if err != nil {
		return
	}
	parts := strings.SplitN(put.key, "/", 3) // {prefix}/{cluster}/{rest}
	if len(parts) < 3 {
		return
	}
	k := parts[2]
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev, _ := strconv.ParseInt(t.last[k].resourceVersion, 10, 64); r > prev {
		t.last[k] = put
	}
	left := t.waiting[k][:0]
	for _, w := range t.waiting[k] {
		if w.rv <= r {
			t.records = append(t.records, landing{key: k + "@" + strconv.FormatInt(w.rv, 10), answered: w.at, began: put.began, stored: put.at})
		} else {
			left = append(left, w)
		}
	}
	t.waiting[k] = left
}

// missing describes up to n updates that never landed, with the newest
// PUT of their key; it runs under t.mu.
func (t *landings) missing(n int) string {
	var out []string
	for k, ws := range t.waiting {
		for _, w := range ws {
			if len(out) == n {
				return strings.Join(out, "; ")
			}
			last := t.last[k]
			out = append(out, fmt.Sprintf("%s@%d answered %s, the newest PUT of its key rv %s at %s",
				k, w.rv, w.at.Format("15:04:05.000"), last.resourceVersion, last.at.Format("15:04:05.000")))
		}
	}
	return strings.Join(out, "; ")
}

func (t *landings) allLanded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.records) >= t.sent
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// hist is a snapshot of a cumulative histogram.
type hist struct {
	bounds []float64
	counts []float64
}

func histogram(p *process, name string) (hist, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return hist{}, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return hist{}, err
	}
	var h hist
	for _, m := range fams[name].GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			h.bounds = append(h.bounds, b.GetUpperBound())
			h.counts = append(h.counts, float64(b.GetCumulativeCount()))
		}
	}
	return h, nil
}

func (h hist) delta(before hist) hist {
	out := hist{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i]
		if i < len(before.counts) {
			out.counts[i] -= before.counts[i]
		}
	}
	return out
}

// quantile interpolates inside the bucket, as PromQL's histogram_quantile.
func (h hist) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return 0
	}
	rank := q * h.counts[len(h.counts)-1]
	prevBound, prevCount := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if c == prevCount {
				return h.bounds[i]
			}
			return prevBound + (h.bounds[i]-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = h.bounds[i], c
	}
	return prevBound
}
