package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/gitsync"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/sink"
)

// runGitSync is git-sync: the bucket's versions as commits, pushed, until
// the process is stopped. It reads the bucket only.
func runGitSync(ctx context.Context, cfg config.Config, e *env) error {
	if cfg.Git.Repository == "" {
		return &config.Error{Key: "GIT_REPOSITORY", Reason: "required"}
	}
	log := logging.New(e.stdout, cfg.LogLevel).With(zap.String(logging.KeyCluster, cfg.ClusterName), logging.Component("git-sync"))
	reg := prometheus.NewRegistry()
	lastPush := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cluster_backup_git_sync_last_push_timestamp_seconds",
		Help: "Time of git-sync's last successful push.",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cluster_backup_git_sync_errors_total",
		Help: "git-sync's failed syncs and rejected or failed pushes.",
	})
	reg.MustRegister(lastPush, failures)
	srv := &http.Server{Addr: cfg.MetricsAddr, ReadHeaderTimeout: 10 * time.Second,
		Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("Metrics server failed", zap.Error(err))
		}
	}()
	defer func() { _ = srv.Close() }()

	store, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return serviceFailure{err}
	}
	if cfg.Signer == nil {
		log.Warn("INTEGRITY_KEY is not set: git-sync cannot tell documents the service wrote from forged ones")
	}
	// With a key, a document or journal object without a valid tag is left
	// out of Git and logged; without one, nothing is checked.
	reader := restore.Signed{Reader: store, Signer: cfg.Signer}
	// The service writes the change journal to S3 stores only; a directory
	// store is listed in full at every poll.
	var journalSource journal.Source
	if m, ok := store.(*sink.MinIO); ok {
		journalSource = m
	}
	s, err := gitsync.New(reader, gitsync.Options{
		Journal: journalSource, Signer: cfg.Signer,
		Repository: cfg.Git.Repository, Branch: cfg.Git.Branch, Window: cfg.Git.Window, Author: cfg.Git.Author,
		Workdir: cfg.Git.Workdir, SSHKeyFile: cfg.Git.SSHKeyFile, CredentialsFile: cfg.Git.CredentialsFile,
		Layout: object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}, Log: log,
		Pushed: func(t time.Time) { lastPush.Set(float64(t.Unix())) },
		Failed: func(error) { failures.Inc() },
	})
	if err != nil {
		return serviceFailure{err}
	}
	return s.Run(ctx)
}
