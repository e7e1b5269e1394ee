// Command bench measures cluster-backup on real servers: initial backup
// throughput against a raw-PUT ceiling, change latency, write amplification,
// peak memory against a naive-informer baseline, API server load and how
// they scale. Every figure is compared with a baseline measured in the same
// run. It writes a Markdown table and a JSON file.
//
//	go run ./bench -sizes 1000,10000,50000 -out bench/results
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := defaultConfig()
	sizes := flag.String("sizes", "1000,10000,50000", "numbers of ConfigMaps for the initial-backup, memory and scaling scenarios")
	scenarios := flag.String("scenarios", "initial,restore,latency,amplification", "scenarios to run (restore restores the largest initial backup; foreign floods the prefix with -foreign-keys keys; ui times the web view at 50,000 objects; git backfills them with git-sync and counts a poll's requests)")
	flag.IntVar(&cfg.latencyRate, "latency-rate", cfg.latencyRate, "updates per second in the latency scenario")
	flag.DurationVar(&cfg.latencyDuration, "latency-duration", cfg.latencyDuration, "length of the latency scenario")
	flag.IntVar(&cfg.latencyObjects, "latency-objects", cfg.latencyObjects, "objects the latency updates spread over")
	flag.IntVar(&cfg.latencyRuns, "latency-runs", cfg.latencyRuns, "runs of the latency scenario (all reported, the median judged)")
	flag.IntVar(&cfg.statusObjects, "status-objects", cfg.statusObjects, "objects of the status-only scenario")
	flag.IntVar(&cfg.historyObjects, "history-objects", cfg.historyObjects, "objects of the cluster of the ui and git scenarios")
	flag.IntVar(&cfg.historyChanged, "history-changed", cfg.historyChanged, "of those, the ones with five versions")
	flag.IntVar(&cfg.viewKeys, "view-keys", cfg.viewKeys, "keys (five versions each) of the point-in-time view in the restore scenario")
	flag.IntVar(&cfg.foreignKeys, "foreign-keys", cfg.foreignKeys, "keys not the service's own under its prefix in the foreign scenario")
	flag.IntVar(&cfg.repeats, "repeats", cfg.repeats, "service/ceiling pairs of the initial backup for sizes up to -repeat-up-to (medians are reported)")
	flag.IntVar(&cfg.repeatUpTo, "repeat-up-to", cfg.repeatUpTo, "the largest size whose initial backup is repeated -repeats times")
	flag.StringVar(&cfg.store, "store", cfg.store, "the store: minio, minio-tmpfs (its drive in memory), minio-distributed (4 servers) or seaweedfs")
	flag.BoolVar(&cfg.direct, "direct", cfg.direct, "reach the store without the counting proxy (PUTs counted by MinIO; initial scenario, minio stores only)")
	flag.StringVar(&cfg.out, "out", cfg.out, "directory for results.md and results.json")
	flag.IntVar(&cfg.concurrency, "batch-size", cfg.concurrency, "the service's BATCH_SIZE (and the concurrency of the baselines)")
	flag.Parse()

	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "error: invalid -sizes entry %q\n", s)
			os.Exit(2)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	cfg.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		cfg.scenarios[strings.TrimSpace(s)] = true
	}

	if err := cfg.checkStoreConfig(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := run(ctx, cfg, func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := res.write(cfg.out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Println(res.markdown())
	fmt.Fprintf(os.Stderr, "results in %s\n", filepath.Join(cfg.out, "results.md"))
}
