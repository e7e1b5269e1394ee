// Package logging builds the service's zap logger so that every line has the
// field names of the product contract (timestamp, level, component, operation,
// message, data, duration_ms, error, ...). Dashboards and runbooks query
// these names, so they are fixed here once instead of at each call site.
package logging

import (
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Field names of the log contract.
const (
	KeyTimestamp  = "timestamp"
	KeyLevel      = "level"
	KeyMessage    = "message"
	KeyComponent  = "component"
	KeyCluster    = "cluster"
	KeyNamespace  = "namespace"
	KeyResource   = "resource"
	KeyOperation  = "operation"
	KeyData       = "data"
	KeyDurationMS = "duration_ms"
	KeyError      = "error"
)

// Operation names a unit of work: the operation field of a log line and
// the operation label of cluster_backup_errors_total. Dashboards and
// runbooks rely on these spellings.
type Operation string

// Operations of the product contract.
const (
	OpMinIOConnect           Operation = "minio_connect"
	OpDiscovery              Operation = "discovery"
	OpResourceList           Operation = "resource_list"
	OpResourceFilter         Operation = "resource_filter"
	OpResourceBackupComplete Operation = "resource_backup_complete"
	OpObjectWrite            Operation = "object_write"
	OpObjectDelete           Operation = "object_delete"
	OpObjectEncode           Operation = "object_encode"
	OpSnapshotStart          Operation = "snapshot_start"
	OpBackupComplete         Operation = "backup_complete"
	OpConfigReload           Operation = "config_reload"
	OpStoreList              Operation = "store_list"
	OpQueueOverflow          Operation = "queue_overflow"
	OpSnapshot               Operation = "snapshot"
	OpLeaderElection         Operation = "leader_election"
	OpPruneGuard             Operation = "prune_guard"
	OpClusterIdentity        Operation = "cluster_identity"
	OpObjectVerify           Operation = "object_verify"
)

// ParseLevel accepts debug, info, warn and error.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return zapcore.InfoLevel, fmt.Errorf("want one of debug, info, warn, error")
}

// New returns a JSON logger writing one object per line to w.
func New(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        KeyTimestamp,
		LevelKey:       KeyLevel,
		MessageKey:     KeyMessage,
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     encodeTime,
		EncodeDuration: zapcore.MillisDurationEncoder,
	})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level))
}

// encodeTime writes RFC 3339 in UTC with milliseconds, ending in Z.
func encodeTime(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
}

// Component names the package or stage a logger belongs to.
func Component(name string) zap.Field { return zap.String(KeyComponent, name) }

// Op names the operation of a line, from the contract's list.
func Op(op Operation) zap.Field { return zap.String(KeyOperation, string(op)) }

// Data attaches structured details under "data".
func Data(kv map[string]any) zap.Field { return zap.Any(KeyData, kv) }

// Duration records d as fractional milliseconds under "duration_ms".
func Duration(d time.Duration) zap.Field {
	return zap.Float64(KeyDurationMS, Millis(d))
}

// Millis converts d to milliseconds with two decimals, the unit of the
// contract's duration_ms fields.
func Millis(d time.Duration) float64 {
	return float64(d.Round(10*time.Microsecond)) / float64(time.Millisecond)
}

// Namespace and Resource name the object a line is about.
func Namespace(ns string) zap.Field { return zap.String(KeyNamespace, ns) }

// Resource names the resource type a line is about.
func Resource(r string) zap.Field { return zap.String(KeyResource, r) }
