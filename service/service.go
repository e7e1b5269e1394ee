// Package service is the backup service's lifecycle, for the run and
// snapshot modes: the start-up order (API server, store, the prefix claim,
// informers), leader election, when a snapshot pass runs, when the restore
// pack and the change index are written, the metrics and health endpoints
// and what readiness and liveness mean, the reload loop and the bounded
// shutdown. It wires the stages (watcher, sink, snapshot) and decides
// nothing they decide.
package service

import (
	"context"
	"fmt"
	"io"
	"math"
	"path"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/sink"
)

// Service is the backup service: the always-on mode (Run) and the one pass
// of the snapshot mode (Snapshot). It holds a logger, a connection to the
// API server and, once connected, the store. The command line builds it
// from a validated config.Config and maps what it returns to exit codes.
type Service struct {
	cfg  config.Config
	log  *zap.Logger
	kube *rest.Config
	// clients reach the API server for the cluster's identity and the
	// Lease.
	clients kubernetes.Interface
	store   sink.Store
	stderr  io.Writer
	// held, in run, is set while another cluster owns the prefix and the
	// service waits, writing nothing (liveness passes meanwhile); nil in
	// the one-shot snapshot, which then stops instead.
	held     *atomic.Bool
	progress bool
}

// Options are what the command line gives the service besides its config.
type Options struct {
	// Version is the binary's, sent to the API server as the user agent.
	Version string
	// Stdout receives the JSON log, Stderr the summaries for a person.
	Stdout, Stderr io.Writer
	// Progress shows the snapshot pass's progress on Stderr (a terminal).
	Progress bool
}

// New connects to the API server named by cfg (KUBECONFIG, else the
// in-cluster account).
func New(ctx context.Context, cfg config.Config, opts Options) (*Service, error) {
	log := logging.New(opts.Stdout, cfg.LogLevel).With(zap.String(logging.KeyCluster, cfg.ClusterName))
	s := &Service{cfg: cfg, log: log, stderr: opts.Stderr, progress: opts.Progress}
	if limit := setMemoryLimit(cgroupMemoryFiles...); limit > 0 {
		log.Info("Soft memory limit set from the container's limit", logging.Component("main"),
			logging.Data(map[string]any{"bytes": limit}))
	}

	kube, err := RestConfig(cfg, opts.Version)
	if err != nil {
		return nil, err
	}
	s.kube = kube
	if s.clients, err = kubernetes.NewForConfig(kube); err != nil {
		return nil, err
	}
	v, err := discovery.NewDiscoveryClientForConfigOrDie(kube).ServerVersion()
	if err != nil {
		log.Error("Failed to reach the API server", logging.Component("main"), logging.Op(logging.OpDiscovery), zap.Error(err),
			logging.Data(map[string]any{"host": kube.Host}))
		return nil, fmt.Errorf("reach API server %s: %w", kube.Host, err)
	}
	log.Info("Connected to the API server", logging.Component("main"), logging.Op(logging.OpDiscovery),
		logging.Data(map[string]any{"host": kube.Host, "server_version": v.GitVersion, "cluster_domain": cfg.ClusterDomain}))
	return s, nil
}

// connectStore opens the store. With m set (the always-on mode, whose
// metrics and health are already served), a failure is counted as
// minio_connect and retried with backoff until ctx ends: a store that is
// down when the service starts (MinIO restarting, a network policy not yet
// applied) delays the backup, not a crash loop, and shows in
// cluster_backup_errors_total and /readyz meanwhile. Without m, the first
// failure is returned.
func (s *Service) connectStore(ctx context.Context, m *metrics.Metrics) error {
	backoff := wait.Backoff{Duration: s.cfg.RetryDelay, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: maxConnectDelay}
	for {
		store, err := openStore(ctx, s.cfg, s.log.With(logging.Component("sink")))
		if err == nil {
			s.store = store
			if m != nil {
				m.StoreUp.Set(1)
			}
			return nil
		}
		if m == nil {
			return err
		}
		m.Error(logging.OpMinIOConnect)
		m.StoreUp.Set(0)
		delay := backoff.Step()
		s.log.Warn("Store not reachable; retrying", logging.Component("sink"), logging.Op(logging.OpMinIOConnect), zap.Error(err),
			logging.Data(map[string]any{"retry_in_ms": logging.Millis(delay)}))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// ClientConfig follows kubectl's loading rules: --kubeconfig or KUBECONFIG
// (one file, which must exist, or a list merged in order), else
// ~/.kube/config; the in-cluster service account when none holds a
// cluster; cfg.Kube's overrides (--context, --cluster, --user, --as, ...)
// on top.
func ClientConfig(cfg config.Config) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.Precedence = []string{clientcmd.RecommendedHomeFile}
	switch paths := filepath.SplitList(cfg.Kubeconfig); len(paths) {
	case 0:
	case 1:
		rules.ExplicitPath = paths[0]
	default:
		rules.Precedence = paths
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &cfg.Kube)
}

// maxConnectDelay caps the wait between attempts to reach the store at
// start.
const maxConnectDelay = time.Minute

// RestConfig loads the cluster's client configuration as kubectl does (see
// ClientConfig), with the service's rate limits and user agent.
func RestConfig(cfg config.Config, version string) (*rest.Config, error) {
	kube, err := ClientConfig(cfg).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (--kubeconfig, KUBECONFIG, ~/.kube/config or the in-cluster service account): %w", err)
	}
	kube.QPS, kube.Burst = cfg.APIQPS, cfg.APIBurst
	kube.UserAgent = "cluster-backup/" + version
	// The service talks to its own cluster's API server: gzip would cost
	// CPU at both ends (a large share of decoding a full list) to save
	// bandwidth on a local network.
	kube.DisableCompression = true
	return kube, nil
}

// openStore connects to MinIO, or opens the directory store when no
// endpoint is configured.
func openStore(ctx context.Context, cfg config.Config, log *zap.Logger) (sink.Store, error) {
	if cfg.MinIOEndpoint == "" {
		d, err := sink.NewDir(cfg.BackupDir)
		if err != nil {
			return nil, err
		}
		log.Info("Using the local directory store", logging.Op(logging.OpMinIOConnect),
			logging.Data(map[string]any{"dir": cfg.BackupDir}))
		return d, nil
	}
	opts := MinIOOptions(cfg)
	// The writer's workers plus a pass's listing.
	opts.Connections = cfg.BatchSize + 1
	opts.NoncurrentDays, opts.NoncurrentNewer = cfg.NoncurrentRetention.Days, cfg.NoncurrentRetention.Newer
	opts.JournalPrefix = path.Join(cfg.BackupPrefix, journal.Dir) + "/"
	opts.ObjectLock, opts.ObjectLockDays = cfg.ObjectLock, cfg.ObjectLockDays
	// One layer retries each call: the writer's queue its writes,
	// sink.WithRetry the rest (RETRY_ATTEMPTS), never minio-go as well.
	opts.MaxRetries = 1
	return sink.NewMinIO(ctx, opts, log)
}

// MinIOOptions are the settings that reach the bucket, the same for the
// service and the commands.
func MinIOOptions(cfg config.Config) sink.MinIOOptions {
	return sink.MinIOOptions{
		Endpoint:   cfg.MinIOEndpoint,
		AccessKey:  cfg.MinIOAccessKey,
		SecretKey:  cfg.MinIOSecretKey,
		Bucket:     cfg.MinIOBucket,
		UseSSL:     cfg.MinIOUseSSL,
		CAFile:     cfg.MinIOCAFile,
		ClientCert: cfg.MinIOClientCert,
		ClientKey:  cfg.MinIOClientKey,
		SSE:        cfg.MinIOSSE,
		Region:     cfg.MinIORegion,
	}
}
