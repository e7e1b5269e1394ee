// Package config turns environment variables, flags and the mounted filtering
// ConfigMap into one validated Config. Every setting is declared once in a
// table, which drives the flags, the --help text, the defaults and the error
// messages, so the four can never drift apart.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
)

// Config is the complete, validated configuration of one process.
type Config struct {
	ClusterName    string
	ClusterDomain  string
	MinIOEndpoint  string
	MinIOAccessKey string
	MinIOSecretKey string
	MinIOBucket    string
	MinIOUseSSL    bool
	MinIOCAFile    string
	MinIORegion    string
	// MinIOClientCert and MinIOClientKey are the client certificate of a
	// store that requires mutual TLS.
	MinIOClientCert string
	MinIOClientKey  string
	// MinIOSSE is server-side encryption of every PUT: "", "s3" or
	// "kms:KEY_ID".
	MinIOSSE        string
	BackupPrefix    string
	BackupDir       string
	BackupConfigDir string
	// Kubeconfig is KUBECONFIG or --kubeconfig: one file, or a list
	// (os.PathListSeparator) merged as kubectl merges it.
	Kubeconfig string
	// Kube are kubectl's overrides of the kubeconfig (--context, --cluster,
	// --user, --as, --as-group, --request-timeout, -n), set by the commands.
	Kube clientcmd.ConfigOverrides
	// Git are the settings of git-sync.
	Git              GitSettings
	LogLevel         zapcore.Level
	MetricsAddr      string
	UIAddr           string // UI_ADDR: the web view, loopback only unless UIAuth
	UIAuth           string // UI_AUTH: "none" or "kubernetes"
	BatchSize        int
	RetryAttempts    int
	RetryDelay       time.Duration
	Debounce         time.Duration
	SnapshotInterval time.Duration
	APIQPS           float32
	APIBurst         int
	StoreQPS         float64
	LeaderElect      bool
	LeaseNamespace   string
	LeaseDuration    time.Duration
	PodName          string
	EnablePprof      bool
	PprofAddr        string
	// SecretEncryption is SECRET_ENCRYPTION as given; Encrypter, built
	// from it and SecretHMACKey, encrypts every Secret's values.
	SecretEncryption string
	SecretHMACKey    []byte
	Encrypter        *encrypt.Encrypter
	// IntegrityKey (INTEGRITY_KEY) and IntegrityKeysOld sign and check
	// what the service stores, through Signer (nil without a key).
	IntegrityKey     []byte
	IntegrityKeysOld [][]byte
	Signer           *object.Signer
	// AgeIdentityFile is the age identity the commands decrypt with.
	AgeIdentityFile string
	// VerifyInterval: every stored object is read back and re-hashed at
	// least once per interval, a share of them in each pass; 0 is off.
	VerifyInterval time.Duration
	// RestorePackInterval: after a pass that follows writes, the stored
	// documents are gathered into the restore pack at most once per
	// interval; 0 writes none.
	RestorePackInterval time.Duration
	// SyncTimeout bounds the wait for the informers' first lists; types
	// not listed by then are incomplete, never pruned, and retried.
	SyncTimeout time.Duration
	// RequireVersioning holds every delete back on a bucket that keeps no
	// versions.
	RequireVersioning bool
	// NoncurrentRetention is the lifecycle rule set on a bucket the
	// service creates; zero sets none.
	NoncurrentRetention Retention
	// ObjectLock (OBJECT_LOCK: "", "governance" or "compliance") and
	// ObjectLockDays (OBJECT_LOCK_RETENTION) are the default S3 Object
	// Lock of a bucket the service creates.
	ObjectLock     string
	ObjectLockDays int
	// MaxPruneFraction is max-prune-fraction (ConfigMap).
	MaxPruneFraction float64
	// AllowMassPrune lets a pass delete more than MaxPruneFraction.
	AllowMassPrune bool

	// Rules are the filtering rules of the ConfigMap in BackupConfigDir, or
	// the defaults when it is unset.
	Rules filter.Rules
	// ConfigData is the ConfigMap content the rules came from.
	ConfigData map[string]string
}

// GitSettings are git-sync's GIT_* settings.
type GitSettings struct {
	Repository, Branch, SSHKeyFile, CredentialsFile, Author, Workdir string
	Window                                                           time.Duration
}

// Error is a configuration error caused by the user. It names the key and,
// unless the key holds a credential, the value.
type Error struct {
	Key    string
	Value  string
	Secret bool
	Reason string
}

func (e *Error) Error() string {
	switch {
	case e.Secret:
		return fmt.Sprintf("invalid %s: %s", e.Key, e.Reason)
	case strings.TrimSpace(e.Value) == "" && e.Reason == "required":
		return fmt.Sprintf("%s is required", e.Key)
	default:
		return fmt.Sprintf("invalid %s %q: %s", e.Key, e.Value, e.Reason)
	}
}

// IsNoCluster reports whether err is only that CLUSTER_NAME is unset.
func IsNoCluster(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == "required" && (e.Key == "CLUSTER_NAME" || e.Key == "--cluster-name")
}

// ErrHelp is returned by Load when the user asked for --help.
var ErrHelp = pflag.ErrHelp

// setting is one environment variable and its flag.
type setting struct {
	env    string
	def    string
	usage  string
	secret bool
	isBool bool
	apply  func(c *Config, v string) error
}

// Variables are the names of every environment variable the service reads
// (each also a flag), in the order --help lists them.
func Variables() []string {
	var out []string
	for _, s := range settings() {
		out = append(out, s.env)
	}
	return out
}

// flagName derives the flag from the environment variable:
// MINIO_ENDPOINT -> minio-endpoint.
func (s setting) flagName() string {
	return strings.ToLower(strings.ReplaceAll(s.env, "_", "-"))
}

func settings() []setting { //nolint:funlen // one table literal, an entry per setting
	return []setting{
		{env: "CLUSTER_NAME", usage: "path segment identifying the cluster, a DNS-1123 label (required)", apply: func(c *Config, v string) error {
			if v == "" {
				return errors.New("required")
			}
			// The Lease name and the key layout are derived from it.
			if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
				return errors.New("must be a DNS-1123 label: " + strings.Join(errs, "; "))
			}
			c.ClusterName = v
			return nil
		}},
		{env: "CLUSTER_DOMAIN", def: "cluster.local", usage: "cluster domain, recorded in logs", apply: func(c *Config, v string) error {
			c.ClusterDomain = v
			return nil
		}},
		{env: "MINIO_ENDPOINT", usage: "MinIO/S3 endpoint host:port; unset stores to BACKUP_DIR", apply: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			if strings.Contains(v, "://") || strings.Contains(v, "/") {
				return errors.New("want host:port without scheme or path (TLS is MINIO_USE_SSL)")
			}
			c.MinIOEndpoint = v
			return nil
		}},
		{env: "MINIO_ACCESS_KEY", secret: true, usage: "MinIO access key (never logged)", apply: func(c *Config, v string) error {
			c.MinIOAccessKey = v
			return nil
		}},
		{env: "MINIO_SECRET_KEY", secret: true, usage: "MinIO secret key (never logged)", apply: func(c *Config, v string) error {
			c.MinIOSecretKey = v
			return nil
		}},
		{env: "MINIO_BUCKET", def: "cluster-backups", usage: "bucket, created with versioning when missing", apply: func(c *Config, v string) error {
			if v == "" {
				return errors.New("required")
			}
			c.MinIOBucket = v
			return nil
		}},
		{env: "MINIO_USE_SSL", def: "true", isBool: true, usage: "use TLS to MinIO", apply: func(c *Config, v string) (err error) {
			c.MinIOUseSSL, err = parseBool(v)
			return err
		}},
		{env: "MINIO_CA_FILE", usage: "extra CA bundle (PEM) for a private MinIO CA", apply: func(c *Config, v string) error {
			c.MinIOCAFile = v
			return nil
		}},
		{env: "MINIO_CLIENT_CERT", usage: "client certificate (PEM) for a store that requires mutual TLS", apply: func(c *Config, v string) error {
			c.MinIOClientCert = v
			return nil
		}},
		{env: "MINIO_CLIENT_KEY", usage: "private key (PEM) of MINIO_CLIENT_CERT", apply: func(c *Config, v string) error {
			c.MinIOClientKey = v
			return nil
		}},
		{env: "MINIO_SSE", usage: "server-side encryption of every object: s3 (SSE-S3) or kms:KEY_ID (SSE-KMS)", apply: func(c *Config, v string) error {
			if v != "" && v != "s3" && !strings.HasPrefix(v, "kms:") || v == "kms:" {
				return errors.New("want s3 or kms:KEY_ID")
			}
			c.MinIOSSE = v
			return nil
		}},
		{env: "MINIO_REGION", def: "us-east-1", usage: "bucket region; set so no location lookup is needed", apply: func(c *Config, v string) error {
			c.MinIORegion = v
			return nil
		}},
		{env: "BACKUP_PREFIX", def: "clusterbackup", usage: "first path segment inside the bucket", apply: func(c *Config, v string) error {
			v = strings.Trim(v, "/")
			if v == "" {
				return errors.New("required")
			}
			c.BackupPrefix = v
			return nil
		}},
		{env: "BACKUP_DIR", def: "./backup", usage: "root of the local directory store when MINIO_ENDPOINT is unset", apply: func(c *Config, v string) error {
			c.BackupDir = v
			return nil
		}},
		{env: "BACKUP_CONFIG_DIR", usage: "directory of the mounted filtering ConfigMap (one file per key)", apply: func(c *Config, v string) error {
			c.BackupConfigDir = v
			return nil
		}},
		{env: "KUBECONFIG", usage: "kubeconfig file, or a list merged as kubectl merges KUBECONFIG; unset: ~/.kube/config, then the in-cluster service account", apply: func(c *Config, v string) error {
			c.Kubeconfig = v
			return nil
		}},
		{env: "GIT_REPOSITORY", usage: "git-sync: the repository to push the history to (https://, ssh:// or file:// URL)", apply: func(c *Config, v string) error {
			c.Git.Repository = v
			return nil
		}},
		{env: "GIT_BRANCH", def: "main", usage: "git-sync: the branch", apply: func(c *Config, v string) error {
			c.Git.Branch = v
			return nil
		}},
		{env: "GIT_SSH_KEY_FILE", usage: "git-sync: private key file for an ssh:// repository", apply: func(c *Config, v string) error {
			c.Git.SSHKeyFile = v
			return nil
		}},
		{env: "GIT_CREDENTIALS_FILE", usage: "git-sync: git-credentials file (https://USER:TOKEN@HOST lines) for an https:// repository", apply: func(c *Config, v string) error {
			c.Git.CredentialsFile = v
			return nil
		}},
		{env: "GIT_COMMIT_WINDOW", def: "10s", usage: "git-sync: the changes of one window become one commit", apply: func(c *Config, v string) (err error) {
			c.Git.Window, err = parseDuration(v)
			return err
		}},
		{env: "GIT_AUTHOR", def: "cluster-backup <cluster-backup@localhost>", usage: "git-sync: the commits' author, as NAME <EMAIL>", apply: func(c *Config, v string) error {
			if !strings.Contains(v, "<") || !strings.HasSuffix(v, ">") {
				return errors.New("want NAME <EMAIL>")
			}
			c.Git.Author = v
			return nil
		}},
		{env: "GIT_WORKDIR", usage: "git-sync: a persistent clone (optional; default a temporary shallow clone)", apply: func(c *Config, v string) error {
			c.Git.Workdir = v
			return nil
		}},
		{env: "LOG_LEVEL", def: "info", usage: "debug, info, warn or error", apply: func(c *Config, v string) (err error) {
			c.LogLevel, err = logging.ParseLevel(v)
			return err
		}},
		{env: "METRICS_ADDR", def: ":8080", usage: "address serving /metrics, /healthz and /readyz", apply: func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want host:port or :port")
			}
			c.MetricsAddr = v
			return nil
		}},
		{env: "UI_ADDR", def: "127.0.0.1:8081", usage: "cluster-backup ui: the web view's address; loopback only unless UI_AUTH=kubernetes", apply: func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want host:port")
			}
			c.UIAddr = v
			return nil
		}},
		{env: "UI_AUTH", def: "none", usage: "cluster-backup ui: none (loopback only) or kubernetes (every request carries a bearer token the API server authenticates, TokenReview, and authorizes for get on /cluster-backup/ui, SubjectAccessReview)", apply: func(c *Config, v string) error {
			if v != "none" && v != "kubernetes" {
				return errors.New("want none or kubernetes")
			}
			c.UIAuth = v
			return nil
		}},
		{env: "BATCH_SIZE", def: "50", usage: "objects written concurrently and per snapshot batch", apply: func(c *Config, v string) (err error) {
			c.BatchSize, err = parseInt(v, 1)
			return err
		}},
		{env: "RETRY_ATTEMPTS", def: "3", usage: "store and API retries before an error is counted", apply: func(c *Config, v string) (err error) {
			c.RetryAttempts, err = parseInt(v, 0)
			return err
		}},
		{env: "RETRY_DELAY", def: "5s", usage: "first retry delay, exponential backoff with jitter after it", apply: func(c *Config, v string) (err error) {
			c.RetryDelay, err = parseDuration(v)
			return err
		}},
		{env: "DEBOUNCE", def: "1s", usage: "per-object window: a first change is written at once, the changes that follow inside the window become one write at its end (at most two writes per object per window)", apply: func(c *Config, v string) (err error) {
			c.Debounce, err = parseDuration(v)
			return err
		}},
		{env: "SNAPSHOT_INTERVAL", def: "1h", usage: "period of the full reconcile pass in run (0 disables it)", apply: func(c *Config, v string) (err error) {
			c.SnapshotInterval, err = parseDuration(v)
			return err
		}},
		{env: "API_QPS", def: "20", usage: "client-side queries per second toward the API server", apply: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 32)
			if err != nil || f <= 0 {
				return errors.New("want a number above 0")
			}
			c.APIQPS = float32(f)
			return nil
		}},
		{env: "API_BURST", def: "40", usage: "client-side burst toward the API server", apply: func(c *Config, v string) (err error) {
			c.APIBurst, err = parseInt(v, 1)
			return err
		}},
		{env: "LEADER_ELECT", def: "false", isBool: true, usage: "with several replicas, only the holder of a Lease writes; the others stand by", apply: func(c *Config, v string) (err error) {
			c.LeaderElect, err = parseBool(v)
			return err
		}},
		{env: "LEADER_ELECTION_NAMESPACE", usage: "namespace of the Lease (default: the pod's namespace)", apply: func(c *Config, v string) error {
			c.LeaseNamespace = v
			return nil
		}},
		{env: "LEASE_DURATION", def: "15s", usage: "how long a standby waits for a silent leader before taking over", apply: func(c *Config, v string) (err error) {
			c.LeaseDuration, err = parseDuration(v)
			if err == nil && c.LeaseDuration < 2*time.Second {
				err = errors.New("must be at least 2s")
			}
			return err
		}},
		{env: "POD_NAME", usage: "identity in leader election (default: the host name)", apply: func(c *Config, v string) error {
			c.PodName = v
			return nil
		}},
		{env: "ENABLE_PPROF", def: "false", isBool: true, usage: "serve Go's /debug/pprof/ profiles on PPROF_ADDR", apply: func(c *Config, v string) (err error) {
			c.EnablePprof, err = parseBool(v)
			return err
		}},
		{env: "PPROF_ADDR", def: "127.0.0.1:6060", usage: "address of the profiles with ENABLE_PPROF, never the metrics port", apply: func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("want host:port")
			}
			c.PprofAddr = v
			return nil
		}},
		{env: "SECRET_ENCRYPTION", usage: "age recipients (age1..., comma-separated) or @FILE: every Secret's values are encrypted to them", apply: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			if _, _, err := encrypt.Recipients(v); err != nil {
				return err
			}
			c.SecretEncryption = v
			return nil
		}},
		{env: "SECRET_HMAC_KEY", secret: true, usage: "key (or @FILE) of the digest that detects changes of encrypted Secrets; required with SECRET_ENCRYPTION (never logged)", apply: func(c *Config, v string) (err error) {
			if v == "" {
				return nil
			}
			c.SecretHMACKey, err = encrypt.Key(v)
			return err
		}},
		{env: "INTEGRITY_KEY", secret: true, usage: "key (or @FILE) of the HMAC-SHA256 stored with every document, the restore pack and the change index; show, history, diff, restore and verify check it (never logged)", apply: func(c *Config, v string) (err error) {
			if v == "" {
				return nil
			}
			c.IntegrityKey, err = encrypt.Key(v)
			return err
		}},
		{env: "INTEGRITY_KEYS_OLD", secret: true, usage: "earlier integrity keys, comma-separated (or @FILE, one per line), still accepted when reading (never logged)", apply: func(c *Config, v string) error {
			keys, err := oldKeys(v)
			c.IntegrityKeysOld = keys
			return err
		}},
		{env: "AGE_IDENTITY_FILE", usage: "age identity file that show, diff and restore decrypt Secrets with (--identity)", apply: func(c *Config, v string) error {
			c.AgeIdentityFile = v
			return nil
		}},
		{env: "VERIFY_INTERVAL", def: "0", usage: "read back and re-hash every stored object once per interval, a share in each pass (0: off)", apply: func(c *Config, v string) (err error) {
			c.VerifyInterval, err = parseDuration(v)
			return err
		}},
		{env: "RESTORE_PACK_INTERVAL", def: "6h", usage: "gather the stored documents into one restore pack, read by restore and diff, at most once per interval after a pass (0: never)", apply: func(c *Config, v string) (err error) {
			c.RestorePackInterval, err = parseDuration(v)
			return err
		}},
		{env: "SYNC_TIMEOUT", def: "2m", usage: "after this, a pass proceeds with the types listed; the others are kept, never pruned, and retried", apply: func(c *Config, v string) (err error) {
			c.SyncTimeout, err = parseDuration(v)
			if err == nil && c.SyncTimeout == 0 {
				err = errors.New("must be above 0")
			}
			return err
		}},
		{env: "REQUIRE_VERSIONING", def: "true", isBool: true, usage: "delete nothing from a bucket that keeps no versions", apply: func(c *Config, v string) (err error) {
			c.RequireVersioning, err = parseBool(v)
			return err
		}},
		{env: "NONCURRENT_RETENTION", usage: "lifecycle rule on a bucket the service creates: 30d, a count of noncurrent versions to keep (10), or both (30d,10)", apply: func(c *Config, v string) (err error) {
			c.NoncurrentRetention, err = ParseRetention(v)
			return err
		}},
		{env: "OBJECT_LOCK", usage: "governance or compliance: a bucket the service creates gets S3 Object Lock with this default mode (empty: none)", apply: func(c *Config, v string) error {
			switch m := strings.ToLower(strings.TrimSpace(v)); m {
			case "", "governance", "compliance":
				c.ObjectLock = m
				return nil
			}
			return errors.New("want governance or compliance")
		}},
		{env: "OBJECT_LOCK_RETENTION", def: "30d", usage: "default retention of each version under OBJECT_LOCK, in days (30d)", apply: func(c *Config, v string) error {
			days, ok := strings.CutSuffix(strings.TrimSpace(v), "d")
			n, err := strconv.Atoi(days)
			if !ok || err != nil || n < 1 {
				return errors.New("want a number of days such as 30d")
			}
			c.ObjectLockDays = n
			return nil
		}},
		{env: "ALLOW_MASS_PRUNE", def: "false", isBool: true, usage: "let a pass delete more than max-prune-fraction of the stored objects", apply: func(c *Config, v string) (err error) {
			c.AllowMassPrune, err = parseBool(v)
			return err
		}},
		{env: "STORE_QPS", def: "0", usage: "maximum store writes and deletes per second (0: unlimited)", apply: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 {
				return errors.New("want a number >= 0")
			}
			c.StoreQPS = f
			return nil
		}},
	}
}

// oldKeys reads INTEGRITY_KEYS_OLD: keys separated by commas, or "@FILE"
// for a file of one key per line.
func oldKeys(spec string) ([][]byte, error) {
	text := spec
	if path, ok := strings.CutPrefix(spec, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read the key file: %w", err)
		}
		text = strings.ReplaceAll(string(b), "\n", ",")
	}
	var out [][]byte
	for i, k := range strings.Split(text, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		key, err := encrypt.Key(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		out = append(out, key)
	}
	return out, nil
}

// buildSigner makes the Signer of INTEGRITY_KEY and INTEGRITY_KEYS_OLD.
func (c *Config) buildSigner() error {
	if c.IntegrityKey == nil {
		if len(c.IntegrityKeysOld) > 0 {
			return &Error{Key: "INTEGRITY_KEYS_OLD", Secret: true, Reason: "set without INTEGRITY_KEY"}
		}
		return nil
	}
	c.Signer = object.NewSigner(c.IntegrityKey, c.IntegrityKeysOld...)
	return nil
}

// buildEncrypter checks that SECRET_ENCRYPTION comes with its key.
func (c *Config) buildEncrypter() error {
	switch {
	case c.SecretEncryption == "" && c.SecretHMACKey != nil:
		return &Error{Key: "SECRET_HMAC_KEY", Secret: true, Reason: "set without SECRET_ENCRYPTION"}
	case c.SecretEncryption == "":
		return nil
	case c.SecretHMACKey == nil:
		return &Error{Key: "SECRET_HMAC_KEY", Secret: true, Reason: "required with SECRET_ENCRYPTION: a random key of at least 16 bytes that this installation keeps (the chart generates one)"}
	}
	enc, err := encrypt.New(c.SecretEncryption, c.SecretHMACKey)
	if err != nil {
		return &Error{Key: "SECRET_ENCRYPTION", Value: c.SecretEncryption, Reason: err.Error()}
	}
	c.Encrypter = enc
	return nil
}

// Load builds the Config of a subcommand from its arguments and the
// environment; flags win over environment variables. lookupEnv is
// os.LookupEnv outside tests. Errors caused by the user are *Error.
func Load(name string, args []string, lookupEnv func(string) (string, bool), usageOut io.Writer) (Config, error) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags := AddFlags(fs)
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		PrintUsage(usageOut, name)
		return Config{}, ErrHelp
	}
	if err != nil {
		return Config{}, &Error{Key: "arguments", Value: strings.Join(args, " "), Reason: err.Error()}
	}
	if fs.NArg() > 0 {
		return Config{}, &Error{Key: "arguments", Value: strings.Join(fs.Args(), " "), Reason: "unexpected"}
	}
	return flags.Config(lookupEnv, nil)
}

// Flags are the settings' flags on one flag set: --minio-endpoint for
// MINIO_ENDPOINT and so on. Config reads them once the set is parsed.
type Flags struct {
	table  []setting
	values []*rawValue
}

// AddFlags registers a flag for every setting on fs.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{table: settings()}
	f.values = make([]*rawValue, len(f.table))
	for i, s := range f.table {
		f.values[i] = &rawValue{isBool: s.isBool}
		fl := fs.VarPF(f.values[i], s.flagName(), "", fmt.Sprintf("%s ($%s)", s.usage, s.env))
		if s.isBool {
			fl.NoOptDefVal = "true"
		}
	}
	return f
}

// IsSetting reports whether a flag name is one of the settings' flags.
func IsSetting(flagName string) bool {
	for _, s := range settings() {
		if s.flagName() == flagName {
			return true
		}
	}
	return false
}

// Config reads every setting from its flag, an override (--backup-cluster
// for CLUSTER_NAME: environment variable -> value), its environment
// variable or its default, in that order, and the ConfigMap. Without a
// CLUSTER_NAME it returns every other setting with an error IsNoCluster reports,
// for a command that can do without one.
func (f *Flags) Config(lookupEnv func(string) (string, bool), overrides map[string]string) (Config, error) {
	return apply(f.table, f.values, lookupEnv, overrides)
}

// apply reads every setting from its flag, an override, its environment
// variable or its default, in that order, and the ConfigMap.
func apply(table []setting, values []*rawValue, lookupEnv func(string) (string, bool), overrides map[string]string) (Config, error) {
	var c Config
	var missingCluster error
	for i, s := range table {
		key, v := s.env, s.def
		if ev, ok := lookupEnv(s.env); ok {
			v = ev
		}
		if ov, ok := overrides[s.env]; ok {
			v = ov
		}
		if values[i].set {
			key, v = "--"+s.flagName(), values[i].s
		}
		if err := s.apply(&c, strings.TrimSpace(v)); err != nil {
			if s.env == "CLUSTER_NAME" && strings.TrimSpace(v) == "" {
				missingCluster = &Error{Key: key, Value: v, Reason: err.Error()}
				continue
			}
			return Config{}, &Error{Key: key, Value: v, Secret: s.secret, Reason: err.Error()}
		}
	}
	if c.MinIOEndpoint != "" && (c.MinIOAccessKey == "") != (c.MinIOSecretKey == "") {
		return Config{}, &Error{Key: "MINIO_ACCESS_KEY", Secret: true, Reason: "MINIO_ACCESS_KEY and MINIO_SECRET_KEY must be set together"}
	}
	if (c.MinIOClientCert == "") != (c.MinIOClientKey == "") {
		return Config{}, &Error{Key: "MINIO_CLIENT_CERT", Value: c.MinIOClientCert, Reason: "MINIO_CLIENT_CERT and MINIO_CLIENT_KEY must be set together"}
	}
	if host, _, _ := net.SplitHostPort(c.UIAddr); c.UIAuth != "kubernetes" && host != "localhost" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return Config{}, &Error{Key: "UI_ADDR", Value: c.UIAddr,
				Reason: "the web view serves loopback addresses only (127.0.0.1, ::1, localhost) unless UI_AUTH=kubernetes checks every request with the cluster's RBAC"}
		}
	}
	if err := c.buildEncrypter(); err != nil {
		return Config{}, err
	}
	if err := c.buildSigner(); err != nil {
		return Config{}, err
	}
	if r := c.NoncurrentRetention; c.ObjectLock != "" && r.Days > 0 && r.Days < c.ObjectLockDays {
		return Config{}, &Error{Key: "NONCURRENT_RETENTION", Value: fmt.Sprintf("%dd", r.Days),
			Reason: fmt.Sprintf("shorter than OBJECT_LOCK_RETENTION %dd: the lifecycle rule would try to expire versions the lock still holds", c.ObjectLockDays)}
	}

	c.Rules = filter.DefaultRules()
	c.MaxPruneFraction = DefaultMaxPruneFraction
	if c.BackupConfigDir != "" {
		data, err := ReadDir(c.BackupConfigDir)
		if err != nil {
			return Config{}, err
		}
		cm, err := ParseConfigMap(data)
		if err != nil {
			return Config{}, err
		}
		cm.ApplyTo(&c)
		c.ConfigData = data
	}
	return c, missingCluster
}

// PrintUsage documents every setting, its flag, variable and default.
func PrintUsage(w io.Writer, name string) {
	fmt.Fprintf(w, "Usage: cluster-backup %s [flags]\n\n", name)
	fmt.Fprintf(w, "Every flag can also be set by its environment variable; flags win.\n\n")
	for _, s := range settings() {
		def := ""
		if s.def != "" {
			def = fmt.Sprintf(" (default %q)", s.def)
		}
		fmt.Fprintf(w, "  --%-20s %-18s %s%s\n", s.flagName(), "$"+s.env, s.usage, def)
	}
	fmt.Fprintf(w, "\nFiltering keys are read from files in BACKUP_CONFIG_DIR:\n")
	for _, k := range configMapKeys() {
		fmt.Fprintf(w, "  %-28s %s\n", k.name, k.usage)
	}
}

// rawValue records a flag's text and whether it was given, so that Load can
// apply the precedence flag > env > default itself.
type rawValue struct {
	s      string
	set    bool
	isBool bool
}

func (v *rawValue) String() string { return v.s }

func (v *rawValue) Type() string {
	if v.isBool {
		return "bool"
	}
	return "string"
}
func (v *rawValue) Set(s string) error {
	v.s, v.set = s, true
	return nil
}

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

func parseInt(v string, min int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < min {
		return 0, fmt.Errorf("want an integer >= %d", min)
	}
	return n, nil
}

// Retention is NONCURRENT_RETENTION: noncurrent versions expire after Days,
// keeping the Newer newest ones.
type Retention struct {
	Days  int
	Newer int
}

// ParseRetention reads "30d", "10" (versions) or "30d,10".
func ParseRetention(v string) (Retention, error) {
	var r Retention
	if strings.TrimSpace(v) == "" {
		return r, nil
	}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if days, ok := strings.CutSuffix(part, "d"); ok {
			n, err := strconv.Atoi(days)
			if err != nil || n < 1 || r.Days != 0 {
				return Retention{}, errors.New("want a number of days such as 30d, a count of versions such as 10, or both: 30d,10")
			}
			r.Days = n
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || r.Newer != 0 {
			return Retention{}, errors.New("want a number of days such as 30d, a count of versions such as 10, or both: 30d,10")
		}
		r.Newer = n
	}
	return r, nil
}

func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("want a duration such as 500ms, 5s or 1h")
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}
