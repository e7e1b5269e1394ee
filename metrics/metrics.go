// Package metrics declares the service's Prometheus metrics, with the names,
// types and labels of the product contract. They are created on a registry
// that the caller passes in, never the global one, so tests can gather them
// in isolation.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cluster-backup/cluster-backup/logging"
)

// Operations counted by cluster_backup_errors_total. Every series starts at
// zero so that alerts and rate() work before the first error.
var Operations = []logging.Operation{
	logging.OpMinIOConnect,
	logging.OpDiscovery,
	logging.OpResourceList,
	logging.OpObjectEncode,
	logging.OpObjectWrite,
	logging.OpObjectDelete,
	logging.OpStoreList,
	logging.OpQueueOverflow,
	logging.OpSnapshot,
	logging.OpConfigReload,
	logging.OpLeaderElection,
	logging.OpPruneGuard,
	logging.OpClusterIdentity,
	logging.OpObjectVerify,
}

// Actions of cluster_backup_resources_total.
const (
	Written   = "written"
	Deleted   = "deleted"
	Unchanged = "unchanged"
	Skipped   = "skipped"
)

// Metrics are the service's own metrics.
type Metrics struct {
	Duration      prometheus.Histogram
	Errors        *prometheus.CounterVec
	Resources     *prometheus.CounterVec
	LastSuccess   prometheus.Gauge
	Namespaces    prometheus.Gauge
	Watched       prometheus.Gauge
	QueueDepth    prometheus.Gauge
	ChangeLatency prometheus.Histogram
	Leader        prometheus.Gauge
	StoreUp       prometheus.Gauge
	// PruneGuard is 1 while a pass's deletes are held back (too many, a
	// foreign cluster's prefix, an unversioned bucket).
	PruneGuard prometheus.Gauge
	// Incomplete counts the selected types whose caches are not complete:
	// their stored keys are never pruned.
	Incomplete prometheus.Gauge
	// Versioning is 1 when the bucket keeps versions.
	Versioning prometheus.Gauge
	// ConfigReloadSuccess is 0 while the last version of the ConfigMap
	// was refused (the one before stays in force), else 1.
	ConfigReloadSuccess prometheus.Gauge
	// ConfigReloadTime is when a version of the ConfigMap was last applied.
	ConfigReloadTime prometheus.Gauge
	// ConfigHash identifies the ConfigMap content in force.
	ConfigHash prometheus.Gauge
	// SecretsEncrypted is 1 when Secrets' values are encrypted before
	// they are stored (SECRET_ENCRYPTION).
	SecretsEncrypted prometheus.Gauge
	// DocumentsSigned is 1 when every document is stored with an
	// integrity tag (INTEGRITY_KEY).
	DocumentsSigned prometheus.Gauge
	// ObjectLock is the bucket's default Object Lock: 0 none, 1
	// governance, 2 compliance.
	ObjectLock prometheus.Gauge
	// PrefixHeld is 1 while another cluster owns the prefix and this
	// service writes nothing.
	PrefixHeld prometheus.Gauge
	// VerifyFailures counts stored objects that read back different from
	// what was written, and were rewritten (VERIFY_INTERVAL).
	VerifyFailures prometheus.Counter
	// Verified counts stored objects read back and re-hashed.
	Verified prometheus.Counter
}

// New creates the metrics on reg.
func New(reg prometheus.Registerer) *Metrics { //nolint:funlen // one declaration per metric
	f := promauto.With(reg)
	m := &Metrics{
		Duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cluster_backup_duration_seconds",
			Help:    "Duration of each full snapshot pass.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}),
		Errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cluster_backup_errors_total",
			Help: "Failed operations, by operation.",
		}, []string{"operation"}),
		Resources: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cluster_backup_resources_total",
			Help: "Objects handled, by resource and action (written, deleted, unchanged, skipped).",
		}, []string{"resource", "action"}),
		LastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_last_success_timestamp_seconds",
			Help: "Unix time at the end of the last successful snapshot pass.",
		}),
		Namespaces: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_namespaces",
			Help: "Namespaces with at least one object stored by the last snapshot pass.",
		}),
		Watched: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_watched_resources",
			Help: "Resource types (GVRs) with a running backup informer.",
		}),
		QueueDepth: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_queue_depth",
			Help: "Objects waiting in the debounce queue.",
		}),
		ChangeLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cluster_backup_change_latency_seconds",
			Help:    "Time from a watch event to the object being durable in the store.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300},
		}),
		Leader: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_leader",
			Help: "1 when this replica backs the cluster up (holds the lease, or leader election is off), 0 on standby.",
		}),
		StoreUp: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_store_up",
			Help: "1 when the store's last call succeeded, 0 from a failed call until the next success.",
		}),
		PruneGuard: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_prune_guard_tripped",
			Help: "1 while the last pass's deletes were held back by a guard (max-prune-fraction, cluster identity, bucket versioning).",
		}),
		Incomplete: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_incomplete_resources",
			Help: "Resource types (and API groups failing discovery) whose caches are not complete; their stored objects are never pruned.",
		}),
		Versioning: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_bucket_versioning",
			Help: "1 when the bucket keeps object versions, 0 when it does not (the directory store keeps none).",
		}),
		ConfigReloadSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_config_reload_success",
			Help: "1 when the last version of the filtering ConfigMap was applied (or none changed since start), 0 when it was refused and the one before stays in force.",
		}),
		ConfigReloadTime: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_config_last_reload_success_timestamp_seconds",
			Help: "Unix time the configuration in force was applied (at start, or by the last successful reload).",
		}),
		ConfigHash: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_config_hash",
			Help: "Digest (48 bits of SHA-256) of the filtering ConfigMap content in force; replicas that disagree run different configurations.",
		}),
		SecretsEncrypted: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_secrets_encrypted",
			Help: "1 when the values of Secrets are encrypted before they are stored (SECRET_ENCRYPTION), else 0.",
		}),
		DocumentsSigned: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_documents_signed",
			Help: "1 when every document is stored with an integrity tag (INTEGRITY_KEY), else 0.",
		}),
		PrefixHeld: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_prefix_held",
			Help: "1 while another cluster owns the backup prefix (the identity marker names it) and this service writes nothing, until cluster-backup adopt.",
		}),
		ObjectLock: f.NewGauge(prometheus.GaugeOpts{
			Name: "cluster_backup_object_lock",
			Help: "The bucket's default S3 Object Lock, as read at start: 0 none, 1 governance, 2 compliance.",
		}),
		VerifyFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "cluster_backup_verify_failures_total",
			Help: "Stored objects that read back different from what was written (or unreadable), found by VERIFY_INTERVAL and rewritten.",
		}),
		Verified: f.NewCounter(prometheus.CounterOpts{
			Name: "cluster_backup_verified_total",
			Help: "Stored objects read back and re-hashed by VERIFY_INTERVAL.",
		}),
	}
	m.StoreUp.Set(1)
	m.ConfigReloadSuccess.Set(1)
	for _, op := range Operations {
		m.Errors.WithLabelValues(string(op))
	}
	return m
}

// Error counts one failed operation.
func (m *Metrics) Error(op logging.Operation) {
	m.Errors.WithLabelValues(string(op)).Inc()
}
