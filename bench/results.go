package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type initialResult struct {
	N                int            `json:"n"`
	Runs             int            `json:"runs"` // service/ceiling pairs; the figures are medians
	Seconds          float64        `json:"seconds"`
	ObjectsPerSecond float64        `json:"objects_per_second"`
	PutsTotal        int            `json:"puts_total"`
	CeilingSeconds   float64        `json:"ceiling_seconds"`
	CeilingPerSecond float64        `json:"ceiling_per_second"`
	RatioToCeiling   float64        `json:"ratio_to_ceiling"`
	PeakRSS          int64          `json:"peak_rss_bytes"`
	BaselineRSS      int64          `json:"baseline_rss_bytes"`
	RSSRatio         float64        `json:"rss_ratio"`
	APIRequests      map[string]int `json:"api_requests_at_start"`
	// CPUPerObject is the service's CPU seconds from its start to the
	// last object of the first backup written, per object (median).
	CPUPerObject float64 `json:"cpu_seconds_per_object"`
	// PackBytes and PackSeconds: the restore pack the service wrote after
	// its first pass (first run), its size and upload time.
	PackBytes   int64   `json:"restore_pack_bytes"`
	PackSeconds float64 `json:"restore_pack_seconds"`
	// BackupCPU and CeilingCPU are the CPU seconds by process (the
	// service, the API server, etcd, the store, the bench's own ceiling
	// client) during the first backup, up to its last object written, and
	// during its ceiling (first run): where the time of a CPU-bound run
	// goes.
	BackupCPU  cpuTimes `json:"backup_cpu_seconds"`
	CeilingCPU cpuTimes `json:"ceiling_cpu_seconds"`
}

type latencyResult struct {
	Updates    int     `json:"updates"`
	Landed     int     `json:"landed"`
	Rate       int     `json:"rate_per_second"`
	Seconds    float64 `json:"seconds"`
	Objects    int     `json:"objects"`
	Debounce   float64 `json:"debounce_seconds"`
	P50        float64 `json:"p50_seconds"`
	P95        float64 `json:"p95_seconds"`
	P99        float64 `json:"p99_seconds"`
	Max        float64 `json:"max_seconds"`
	ServiceP50 float64 `json:"service_p50_seconds"`
	ServiceP95 float64 `json:"service_p95_seconds"`
	ServiceP99 float64 `json:"service_p99_seconds"`
	// The updates' time split: from the API server's answer to the
	// service sending the PUT, and the PUT itself.
	BeforeWriteP50 float64 `json:"before_write_p50_seconds"`
	BeforeWriteP99 float64 `json:"before_write_p99_seconds"`
	WriteP50       float64 `json:"write_p50_seconds"`
	WriteP99       float64 `json:"write_p99_seconds"`
	// Whose time it is: the API server's, from its answer to the event
	// reaching a watcher (the bench's own, on the same server), and the
	// service's, from the event to the store's answer; over Split updates.
	DeliveryP50 float64 `json:"delivery_p50_seconds"`
	DeliveryP99 float64 `json:"delivery_p99_seconds"`
	OwnP50      float64 `json:"service_share_p50_seconds"`
	OwnP99      float64 `json:"service_share_p99_seconds"`
	Split       int     `json:"split_updates"`
	// Puts are the documents the store took while the updates landed.
	Puts int `json:"puts"`
	// Held is the updates a second the load held, CPU the seconds each
	// process used meanwhile, and NeedCores and ServiceCores the cores
	// the others and the service need at the asked rate, of Cores.
	Held         float64  `json:"held_per_second"`
	CPU          cpuTimes `json:"cpu_seconds"`
	Cores        int      `json:"cores"`
	NeedCores    float64  `json:"others_need_cores"`
	ServiceCores float64  `json:"service_needs_cores"`
	// Runs are every run of the scenario; the figures above are the
	// median run's, by p99.
	Runs []latencyRun `json:"runs,omitempty"`
}

type latencyRun struct {
	P50         float64 `json:"p50_seconds"`
	P99         float64 `json:"p99_seconds"`
	OwnP99      float64 `json:"service_share_p99_seconds"`
	DeliveryP99 float64 `json:"delivery_p99_seconds"`
	Updates     int     `json:"updates"`
	Puts        int     `json:"puts"`
	Held        float64 `json:"held_per_second"`
	NeedCores   float64 `json:"need_cores"` // every process's, at the asked rate
}

type amplification struct {
	BurstObjects       int            `json:"burst_objects"`
	BurstUpdates       int            `json:"burst_updates_each"`
	BurstPuts          int            `json:"burst_puts"`
	BurstMaxPerObject  int            `json:"burst_max_puts_per_object"`
	StatusUpdates      int            `json:"status_updates"`
	StatusPuts         int            `json:"status_puts"`
	RestartPuts        int            `json:"restart_puts"`
	RestartAPIRequests map[string]int `json:"restart_api_requests"`
	PassAPIRequests    map[string]int `json:"snapshot_pass_api_requests"`
}

type results struct {
	Date          string          `json:"date"`
	Machine       string          `json:"machine"`
	Config        string          `json:"config"`
	Store         string          `json:"store"`
	Direct        bool            `json:"direct"`
	Initial       []initialResult `json:"initial"`
	Latency       *latencyResult  `json:"latency,omitempty"`
	Amplification *amplification  `json:"amplification,omitempty"`
	Restore       *restoreResult  `json:"restore,omitempty"`
	Foreign       *foreignResult  `json:"foreign,omitempty"`
	UI            *uiResult       `json:"ui,omitempty"`
	Git           *gitResult      `json:"git,omitempty"`
}

func (c config) describe() string {
	reach := "behind a counting proxy"
	if c.direct {
		reach = "reached directly (PUTs counted by MinIO)"
	}
	return fmt.Sprintf("ConfigMaps of ~%d B (a properties file, different in each) in %d namespaces; BATCH_SIZE %d; DEBOUNCE %s; %s %s",
		c.bodyBytes, c.namespaces, c.concurrency, c.debounce, storeDescriptions[c.store], reach)
}

func goVersion() string { return runtime.Version() }

func metav1PatchOptions() metav1.PatchOptions { return metav1.PatchOptions{FieldManager: "bench"} }

func (r *results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.markdown()), 0o644)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func requests(m map[string]int) string {
	var keys []string
	for k, v := range m {
		if v != 0 {
			keys = append(keys, fmt.Sprintf("%s %d", k, v))
		}
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}

func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s. %s.\n\n", r.Date, r.Machine, r.Config)
	if len(r.Initial) > 0 {
		b.WriteString("| ConfigMaps | runs | initial backup | objects/s | raw PUT ceiling/s | ratio | service CPU per object | PUTs | peak RSS | naive baseline RSS | RSS ratio | API requests at start |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, i := range r.Initial {
			fmt.Fprintf(&b, "| %d | %d | %.1f s | %.0f | %.0f | %.2f | %.0f us | %d | %s | %s | %.2f | %s |\n",
				i.N, i.Runs, i.Seconds, i.ObjectsPerSecond, i.CeilingPerSecond, i.RatioToCeiling, i.CPUPerObject*1e6, i.PutsTotal, mib(i.PeakRSS), mib(i.BaselineRSS), i.RSSRatio, requests(i.APIRequests))
		}
		b.WriteString("\nWith several runs, service and ceiling runs alternate; times are medians, the ratio is the median of the pairs' ratios, peak RSS the highest.\n")
		b.WriteString("\n")
	}
	b.WriteString("| figure | target | measured | verdict |\n| --- | --- | --- | --- |\n")
	for _, i := range r.Initial {
		if i.N == 10000 && r.Store == storeMinIOTmpfs {
			fmt.Fprintf(&b, "| initial backup, 10,000 ConfigMaps, store in memory | >= 1,450 objects/s and >= 0.85 x raw PUT ceiling | %.0f objects/s, %.2f x | %s |\n",
				i.ObjectsPerSecond, i.RatioToCeiling, verdict(i.ObjectsPerSecond >= 1450 && i.RatioToCeiling >= 0.85))
		} else if i.N == 10000 {
			fmt.Fprintf(&b, "| initial backup, 10,000 ConfigMaps | >= 0.8 x raw PUT ceiling | %.2f x | %s |\n", i.RatioToCeiling, verdict(i.RatioToCeiling >= 0.8))
		}
		if i.N >= 10000 {
			fmt.Fprintf(&b, "| service CPU per object, first backup of %d | <= 250 us | %.0f us | %s |\n", i.N, i.CPUPerObject*1e6, verdict(i.CPUPerObject <= 250e-6))
		}
		if i.N == 50000 {
			fmt.Fprintf(&b, "| peak RSS at 50,000 ConfigMaps | <= 0.6 x naive baseline and < 512 MiB | %.2f x, %s | %s |\n",
				i.RSSRatio, mib(i.PeakRSS), verdict(i.RSSRatio <= 0.6 && i.PeakRSS < 512<<20))
		}
	}
	if l := r.Latency; l != nil {
		target, verdictOf := latencyTarget(l)
		runs := make([]string, len(l.Runs))
		for i, run := range l.Runs {
			runs[i] = fmt.Sprintf("p50 %.3f s / p99 %.3f s (service's share p99 %.3f s; %d PUTs for %d updates; %.0f/s held, %.1f cores needed)", run.P50, run.P99, run.OwnP99, run.Puts, run.Updates, run.Held, run.NeedCores)
		}
		fmt.Fprintf(&b, "| change latency, %d updates/s over %d objects for %.0f s, median of %d runs | %s | p50 %.3f s, p95 %.3f s, p99 %.3f s; the API server's delivery p50 %.3f s, p99 %.3f s; the service's share (event to stored) p50 %.3f s, p99 %.3f s (its histogram: p50 %.3f s, p99 %.3f s); the write alone p50 %.3f s, p99 %.3f s; runs: %s | %s |\n",
			l.Rate, l.Objects, l.Seconds, max(len(l.Runs), 1), target, l.P50, l.P95, l.P99, l.DeliveryP50, l.DeliveryP99, l.OwnP50, l.OwnP99,
			l.ServiceP50, l.ServiceP99, l.WriteP50, l.WriteP99, strings.Join(runs, "; "), verdictOf)
	}
	if a := r.Amplification; a != nil {
		fmt.Fprintf(&b, "| restart over an unchanged cluster | 0 PUTs | %d PUTs | %s |\n", a.RestartPuts, verdict(a.RestartPuts == 0))
		fmt.Fprintf(&b, "| %d status-only updates | 0 PUTs | %d PUTs | %s |\n", a.StatusUpdates, a.StatusPuts, verdict(a.StatusPuts == 0))
		fmt.Fprintf(&b, "| bursts of %d updates to one object in the window (%d objects) | <= 2 PUTs each | max %d, total %d | %s |\n",
			a.BurstUpdates, a.BurstObjects, a.BurstMaxPerObject, a.BurstPuts, verdict(a.BurstMaxPerObject <= 2))
		fmt.Fprintf(&b, "| API requests at a restart | one LIST and one WATCH per type, no GET | %s | %s |\n", requests(a.RestartAPIRequests), verdict(apiOK(a.RestartAPIRequests)))
		fmt.Fprintf(&b, "| API requests in a snapshot pass | zero LISTs | %s | %s |\n", requests(a.PassAPIRequests), verdict(a.PassAPIRequests["LIST configmaps"] == 0 && a.PassAPIRequests["LIST benchitems"] == 0))
	}
	if x := r.Restore; x != nil {
		fmt.Fprintf(&b, "| restore of %d ConfigMaps into empty namespaces | >= 0.8 x parallel server-side apply and >= 1,000 objects/s | %.0f objects/s in %.1f s, %.2f x the ceiling's %.0f/s, peak RSS %s; %d documents from the restore pack, %d from their own keys | %s |\n",
			x.Objects, x.ObjectsPerSecond, x.Seconds, x.RatioToCeiling, x.CeilingPerSecond, mib(x.PeakRSS), x.FromPack, x.FromKeys, verdict(x.RatioToCeiling >= 0.8 && x.ObjectsPerSecond >= 1000))
		fmt.Fprintf(&b, "| the same restore again | 0 writes | %s in %.1f s | %s |\n", requests(x.RerunWrites), x.RerunSeconds, verdict(x.RerunWrites["PATCH configmaps"]+x.RerunWrites["POST configmaps"]+x.RerunWrites["PUT configmaps"] == 0))
		fmt.Fprintf(&b, "| diff of %d objects against the live cluster | one LIST per type and namespace, no GET | %.1f s, %s, peak RSS %s | %s |\n",
			x.Objects, x.DiffSeconds, requests(x.DiffRequests), mib(x.DiffPeakRSS), verdict(x.DiffRequests["GET configmaps"] == 0))
		fmt.Fprintf(&b, "| point-in-time view of %d keys x 5 versions | one list request per 1,000 versions | %.1f s, %d list requests, peak RSS %s | %s |\n",
			x.ViewKeys, x.ViewSeconds, x.ViewListRequests, mib(x.ViewPeakRSS), verdict(x.ViewListRequests <= int64(x.ViewVersions/1000+20)))
	}
	if f := r.Foreign; f != nil {
		fmt.Fprintf(&b, "| start-up and %d passes with %d foreign keys under the prefix (%d own objects) | under the chart's %s limit, nothing foreign deleted | peak RSS %s (%s without them, %.0f B per foreign key), first pass after %.1f s (%.1f s without), %d of a sample of 100 deleted | %s |\n",
			f.Passes, f.ForeignKeys, f.Objects, mib(f.MemoryLimit), mib(f.PeakRSS), mib(f.BaselineRSS), f.BytesPerKey, f.FirstPass, f.BaselineFirst, f.ForeignDeleted, verdict(f.PeakRSS < f.MemoryLimit && f.ForeignDeleted == 0))
	}
	r.historyRows(&b)
	if len(r.Initial) >= 2 {
		first, last := r.Initial[0], r.Initial[len(r.Initial)-1]
		for _, i := range r.Initial {
			if i.N == 10000 {
				first = i
			}
		}
		if last.N > first.N {
			scale := float64(last.N) / float64(first.N)
			t := last.Seconds / first.Seconds
			m := float64(last.PeakRSS) / float64(first.PeakRSS)
			fmt.Fprintf(&b, "| scaling %d -> %d (x%.0f) | time and memory grow no faster than linearly | time x%.2f, memory x%.2f | %s |\n",
				first.N, last.N, scale, t, m, verdict(t <= scale*1.1 && m <= scale*1.1))
		}
	}
	return b.String()
}

// apiOK: at most one LIST and one WATCH per type at start, and no GET.
func apiOK(m map[string]int) bool {
	for k, v := range m {
		verb := strings.SplitN(k, " ", 2)[0]
		if (verb == "GET" && v > 0) || v > 1 {
			return false
		}
	}
	return true
}

// latencyTarget is the change latency wanted at the scenario's rate: up to
// 100 updates a second p50 <= 0.2 s and p99 <= 0.6 s; up to 500, p50 <=
// 0.4 s, p99 <= 1.2 s and the service's share p99 <= 0.3 s; above that the
// figure is measured, with no target.
func latencyTarget(l *latencyResult) (target, verdictOf string) {
	var ok bool
	switch {
	case l.Rate <= 100:
		target, ok = "p50 <= 0.2 s, p99 <= 0.6 s", l.P50 <= 0.2 && l.P99 <= 0.6
	case l.Rate <= 500:
		target, ok = "p50 <= 0.4 s, p99 <= 1.2 s, the service's share p99 <= 0.3 s", l.P50 <= 0.4 && l.P99 <= 1.2 && l.OwnP99 <= 0.3
	default:
		return "none (measured)", "measured"
	}
	verdictOf = verdict(ok)
	if !ok && saturated(l) {
		verdictOf += fmt.Sprintf(": the machine is saturated (at %d/s the API server, etcd, the store and the load need %.1f cores and the service %.1f, of %d)",
			l.Rate, l.NeedCores, l.ServiceCores, l.Cores)
	}
	return target, verdictOf
}

// saturated says whether the processes of a latency run need at least nine
// tenths of the machine's cores at the asked rate: then queues grow in
// every one of them.
func saturated(l *latencyResult) bool {
	return l.Cores > 0 && l.NeedCores+l.ServiceCores >= 0.9*float64(l.Cores)
}

// historyRows are the lines of the web view and git-sync scenarios.
func (r *results) historyRows(b *strings.Builder) {
	if r.UI != nil {
		r.UI.rows(b)
	}
	if r.Git != nil {
		r.Git.rows(b)
	}
}
