package config

import (
	"context"
	"maps"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/logging"
)

// Watch calls apply with every new valid version of the ConfigMap mounted at
// dir, until ctx ends. The kubelet updates a mounted ConfigMap by swapping
// the ..data symlink, so Watch watches the directory, not the files, and
// re-reads it after a short quiet period. An invalid version is logged with
// operation config_reload and reported through onError; the version in
// force stays. current is the content already applied.
func Watch(ctx context.Context, dir string, current map[string]string, log *zap.Logger,
	apply func(ConfigMap), onError func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	if err := w.Add(dir); err != nil {
		return &Error{Key: "BACKUP_CONFIG_DIR", Value: dir, Reason: "cannot watch: " + err.Error()}
	}
	log = log.With(logging.Op(logging.OpConfigReload))
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			log.Warn("ConfigMap watch error", zap.Error(err))
		case <-w.Events:
			settle = time.After(300 * time.Millisecond)
		case <-settle:
			settle = nil
			data, err := ReadDir(dir)
			if err == nil && maps.Equal(data, current) {
				continue
			}
			var cm ConfigMap
			if err == nil {
				cm, err = ParseConfigMap(data)
			}
			if err != nil {
				log.Error("Invalid configuration; keeping the one in force", zap.Error(err))
				onError(err)
				continue
			}
			current = data
			log.Info("Configuration reloaded", logging.Data(map[string]any{
				"filtering_mode": string(cm.Rules.Mode), "keys": len(data),
			}))
			apply(cm)
		}
	}
}
