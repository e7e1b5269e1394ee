package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/cluster-backup/cluster-backup/filter"
)

func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("run", nil, envOf(map[string]string{"CLUSTER_NAME": "east"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ClusterName:         "east",
		ClusterDomain:       "cluster.local",
		MinIOBucket:         "cluster-backups",
		MinIOUseSSL:         true,
		MinIORegion:         "us-east-1",
		BackupPrefix:        "clusterbackup",
		BackupDir:           "./backup",
		LogLevel:            zapcore.InfoLevel,
		MetricsAddr:         ":8080",
		UIAddr:              "127.0.0.1:8081",
		UIAuth:              "none",
		PprofAddr:           "127.0.0.1:6060",
		BatchSize:           50,
		RetryAttempts:       3,
		RetryDelay:          5 * time.Second,
		Debounce:            time.Second,
		SnapshotInterval:    time.Hour,
		APIQPS:              20,
		APIBurst:            40,
		LeaseDuration:       15 * time.Second,
		Rules:               filter.DefaultRules(),
		SyncTimeout:         2 * time.Minute,
		RestorePackInterval: 6 * time.Hour,
		RequireVersioning:   true,
		MaxPruneFraction:    0.1,
		ObjectLockDays:      30,
		Git:                 GitSettings{Branch: "main", Window: 10 * time.Second, Author: "cluster-backup <cluster-backup@localhost>"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestEveryVariable(t *testing.T) {
	env := map[string]string{
		"CLUSTER_NAME":          "prod-east",
		"CLUSTER_DOMAIN":        "corp.local",
		"MINIO_ENDPOINT":        "minio.example:9000",
		"MINIO_ACCESS_KEY":      "AK",
		"MINIO_SECRET_KEY":      "SK",
		"MINIO_BUCKET":          "b1",
		"MINIO_USE_SSL":         "false",
		"MINIO_CA_FILE":         "/ca.pem",
		"BACKUP_PREFIX":         "/pfx/",
		"BACKUP_DIR":            "/data",
		"KUBECONFIG":            "/kc",
		"LOG_LEVEL":             "debug",
		"METRICS_ADDR":          "127.0.0.1:9090",
		"BATCH_SIZE":            "7",
		"RETRY_ATTEMPTS":        "0",
		"RETRY_DELAY":           "250ms",
		"DEBOUNCE":              "0",
		"SNAPSHOT_INTERVAL":     "15m",
		"API_QPS":               "5.5",
		"API_BURST":             "11",
		"SYNC_TIMEOUT":          "30s",
		"REQUIRE_VERSIONING":    "false",
		"NONCURRENT_RETENTION":  "30d,10",
		"ALLOW_MASS_PRUNE":      "true",
		"MINIO_CLIENT_CERT":     "/tls.crt",
		"MINIO_CLIENT_KEY":      "/tls.key",
		"MINIO_SSE":             "kms:backup-key",
		"PPROF_ADDR":            "127.0.0.1:7070",
		"SECRET_ENCRYPTION":     testRecipient,
		"SECRET_HMAC_KEY":       "0123456789abcdef",
		"AGE_IDENTITY_FILE":     "/key.txt",
		"VERIFY_INTERVAL":       "24h",
		"RESTORE_PACK_INTERVAL": "0",
		"INTEGRITY_KEY":         "integrity-0123456789",
		"INTEGRITY_KEYS_OLD":    "old-key-one-0123456789, old-key-two-0123456789",
		"OBJECT_LOCK":           "Compliance",
		"OBJECT_LOCK_RETENTION": "14d",
	}
	c, err := Load("run", nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]any{
		"ClusterName":         {c.ClusterName, "prod-east"},
		"ClusterDomain":       {c.ClusterDomain, "corp.local"},
		"MinIOEndpoint":       {c.MinIOEndpoint, "minio.example:9000"},
		"MinIOAccessKey":      {c.MinIOAccessKey, "AK"},
		"MinIOSecretKey":      {c.MinIOSecretKey, "SK"},
		"MinIOBucket":         {c.MinIOBucket, "b1"},
		"MinIOUseSSL":         {c.MinIOUseSSL, false},
		"MinIOCAFile":         {c.MinIOCAFile, "/ca.pem"},
		"BackupPrefix":        {c.BackupPrefix, "pfx"},
		"BackupDir":           {c.BackupDir, "/data"},
		"Kubeconfig":          {c.Kubeconfig, "/kc"},
		"LogLevel":            {c.LogLevel, zapcore.DebugLevel},
		"MetricsAddr":         {c.MetricsAddr, "127.0.0.1:9090"},
		"BatchSize":           {c.BatchSize, 7},
		"RetryAttempts":       {c.RetryAttempts, 0},
		"RetryDelay":          {c.RetryDelay, 250 * time.Millisecond},
		"Debounce":            {c.Debounce, time.Duration(0)},
		"SnapshotInterval":    {c.SnapshotInterval, 15 * time.Minute},
		"APIQPS":              {c.APIQPS, float32(5.5)},
		"APIBurst":            {c.APIBurst, 11},
		"SyncTimeout":         {c.SyncTimeout, 30 * time.Second},
		"RequireVersioning":   {c.RequireVersioning, false},
		"NoncurrentRetention": {c.NoncurrentRetention, Retention{Days: 30, Newer: 10}},
		"AllowMassPrune":      {c.AllowMassPrune, true},
		"MinIOClientCert":     {c.MinIOClientCert, "/tls.crt"},
		"MinIOClientKey":      {c.MinIOClientKey, "/tls.key"},
		"MinIOSSE":            {c.MinIOSSE, "kms:backup-key"},
		"PprofAddr":           {c.PprofAddr, "127.0.0.1:7070"},
		"SecretEncryption":    {c.SecretEncryption, testRecipient},
		"Encrypter":           {c.Encrypter != nil, true},
		"AgeIdentityFile":     {c.AgeIdentityFile, "/key.txt"},
		"VerifyInterval":      {c.VerifyInterval, 24 * time.Hour},
		"RestorePackInterval": {c.RestorePackInterval, time.Duration(0)},
		"IntegrityKey":        {string(c.IntegrityKey), "integrity-0123456789"},
		"IntegrityKeysOld":    {len(c.IntegrityKeysOld), 2},
		"Signer":              {c.Signer != nil, true},
		"ObjectLock":          {c.ObjectLock, "compliance"},
		"ObjectLockDays":      {c.ObjectLockDays, 14},
	}
	for name, gw := range checks {
		if gw[0] != gw[1] {
			t.Errorf("%s = %v, want %v", name, gw[0], gw[1])
		}
	}
}

func TestFlagsWinOverEnv(t *testing.T) {
	env := envOf(map[string]string{"CLUSTER_NAME": "from-env", "DEBOUNCE": "bad", "MINIO_USE_SSL": "true"})
	c, err := Load("run", []string{"--cluster-name", "from-flag", "--debounce=2s", "--minio-use-ssl=false"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "from-flag" || c.Debounce != 2*time.Second || c.MinIOUseSSL {
		t.Errorf("flags did not win: %+v", c)
	}
	// A bare boolean flag means true.
	c, err = Load("run", []string{"--minio-use-ssl"}, envOf(map[string]string{"CLUSTER_NAME": "x", "MINIO_USE_SSL": "false"}), io.Discard)
	if err != nil || !c.MinIOUseSSL {
		t.Errorf("--minio-use-ssl: %v %v", c.MinIOUseSSL, err)
	}
}

// testRecipient is an age public key (of an identity nobody keeps).
const testRecipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

func TestBadValues(t *testing.T) {
	base := map[string]string{"CLUSTER_NAME": "east"}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantMsg []string
		notMsg  string
		unset   string
	}{
		{name: "missing cluster name", unset: "CLUSTER_NAME", wantMsg: []string{"CLUSTER_NAME is required"}},
		{name: "empty cluster name", env: map[string]string{"CLUSTER_NAME": " "}, wantMsg: []string{"CLUSTER_NAME is required"}},
		{name: "cluster name with slash", env: map[string]string{"CLUSTER_NAME": "a/b"}, wantMsg: []string{"CLUSTER_NAME", `"a/b"`}},
		{name: "bad duration", env: map[string]string{"DEBOUNCE": "soon"}, wantMsg: []string{"DEBOUNCE", `"soon"`}},
		{name: "negative duration", env: map[string]string{"RETRY_DELAY": "-1s"}, wantMsg: []string{"RETRY_DELAY", `"-1s"`, "negative"}},
		{name: "bad interval", env: map[string]string{"SNAPSHOT_INTERVAL": "1 hour"}, wantMsg: []string{"SNAPSHOT_INTERVAL", `"1 hour"`}},
		{name: "bad bool", env: map[string]string{"MINIO_USE_SSL": "maybe"}, wantMsg: []string{"MINIO_USE_SSL", `"maybe"`}},
		{name: "cluster name not a DNS label", env: map[string]string{"CLUSTER_NAME": "Prod_East"}, wantMsg: []string{"CLUSTER_NAME", `"Prod_East"`, "DNS-1123 label"}},
		{name: "bad sync timeout", env: map[string]string{"SYNC_TIMEOUT": "0"}, wantMsg: []string{"SYNC_TIMEOUT", `"0"`}},
		{name: "bad retention", env: map[string]string{"NONCURRENT_RETENTION": "30 days"}, wantMsg: []string{"NONCURRENT_RETENTION", `"30 days"`}},
		{name: "bad log level", env: map[string]string{"LOG_LEVEL": "loud"}, wantMsg: []string{"LOG_LEVEL", `"loud"`}},
		{name: "zero batch", env: map[string]string{"BATCH_SIZE": "0"}, wantMsg: []string{"BATCH_SIZE", `"0"`}},
		{name: "bad retries", env: map[string]string{"RETRY_ATTEMPTS": "three"}, wantMsg: []string{"RETRY_ATTEMPTS", `"three"`}},
		{name: "bad qps", env: map[string]string{"API_QPS": "0"}, wantMsg: []string{"API_QPS", `"0"`}},
		{name: "bad burst", env: map[string]string{"API_BURST": "-3"}, wantMsg: []string{"API_BURST", `"-3"`}},
		{name: "bad metrics addr", env: map[string]string{"METRICS_ADDR": "8080"}, wantMsg: []string{"METRICS_ADDR", `"8080"`}},
		{name: "web view off loopback", env: map[string]string{"UI_ADDR": "0.0.0.0:8081"}, wantMsg: []string{"UI_ADDR", `"0.0.0.0:8081"`, "loopback", "UI_AUTH=kubernetes"}},
		{name: "bad web view auth", env: map[string]string{"UI_AUTH": "basic"}, wantMsg: []string{"UI_AUTH", `"basic"`}},
		{name: "bad web view addr", env: map[string]string{"UI_ADDR": "8081"}, wantMsg: []string{"UI_ADDR", `"8081"`}},
		{name: "endpoint with scheme", env: map[string]string{"MINIO_ENDPOINT": "http://minio:9000"}, wantMsg: []string{"MINIO_ENDPOINT", `"http://minio:9000"`}},
		{name: "empty bucket", env: map[string]string{"MINIO_BUCKET": ""}, wantMsg: []string{"MINIO_BUCKET"}},
		{name: "half credentials", env: map[string]string{"MINIO_ENDPOINT": "m:9000", "MINIO_ACCESS_KEY": "topsecret"}, wantMsg: []string{"MINIO_SECRET_KEY"}, notMsg: "topsecret"},
		{name: "bad recipient", env: map[string]string{"SECRET_ENCRYPTION": "age1nope", "SECRET_HMAC_KEY": "0123456789abcdef"}, wantMsg: []string{"SECRET_ENCRYPTION", `"age1nope"`}},
		{name: "encryption without a digest key", env: map[string]string{"SECRET_ENCRYPTION": testRecipient}, wantMsg: []string{"SECRET_HMAC_KEY", "required with SECRET_ENCRYPTION"}},
		{name: "short digest key", env: map[string]string{"SECRET_ENCRYPTION": testRecipient, "SECRET_HMAC_KEY": "hunter2"}, wantMsg: []string{"SECRET_HMAC_KEY", "too short"}, notMsg: "hunter2"},
		{name: "digest key without encryption", env: map[string]string{"SECRET_HMAC_KEY": "0123456789abcdef-secret"}, wantMsg: []string{"SECRET_HMAC_KEY", "without SECRET_ENCRYPTION"}, notMsg: "0123456789abcdef-secret"},
		{name: "bad sse", env: map[string]string{"MINIO_SSE": "aes"}, wantMsg: []string{"MINIO_SSE", `"aes"`, "kms:KEY_ID"}},
		{name: "client cert without key", env: map[string]string{"MINIO_CLIENT_CERT": "/tls.crt"}, wantMsg: []string{"MINIO_CLIENT_CERT", "MINIO_CLIENT_KEY"}},
		{name: "bad pprof addr", env: map[string]string{"PPROF_ADDR": "6060"}, wantMsg: []string{"PPROF_ADDR", `"6060"`}},
		{name: "bad flag value names the flag", args: []string{"--debounce", "x"}, wantMsg: []string{"--debounce", `"x"`}},
		{name: "unknown flag", args: []string{"--nope"}, wantMsg: []string{"arguments", "--nope"}},
		{name: "stray argument", args: []string{"extra"}, wantMsg: []string{"arguments", "extra"}},
		{name: "short integrity key", env: map[string]string{"INTEGRITY_KEY": "hunter2"}, wantMsg: []string{"INTEGRITY_KEY", "too short"}, notMsg: "hunter2"},
		{name: "short old integrity key", env: map[string]string{"INTEGRITY_KEY": "integrity-0123456789", "INTEGRITY_KEYS_OLD": "integrity-0123456789-old,hunter2"}, wantMsg: []string{"INTEGRITY_KEYS_OLD", "key 2", "too short"}, notMsg: "hunter2"},
		{name: "old integrity keys alone", env: map[string]string{"INTEGRITY_KEYS_OLD": "integrity-0123456789-old"}, wantMsg: []string{"INTEGRITY_KEYS_OLD", "without INTEGRITY_KEY"}, notMsg: "integrity-0123456789-old"},
		{name: "bad object lock", env: map[string]string{"OBJECT_LOCK": "strict"}, wantMsg: []string{"OBJECT_LOCK", `"strict"`, "governance or compliance"}},
		{name: "bad lock retention", env: map[string]string{"OBJECT_LOCK_RETENTION": "1y"}, wantMsg: []string{"OBJECT_LOCK_RETENTION", `"1y"`}},
		{name: "noncurrent retention shorter than the lock", env: map[string]string{"OBJECT_LOCK": "compliance", "NONCURRENT_RETENTION": "7d"}, wantMsg: []string{"NONCURRENT_RETENTION", `"7d"`, "OBJECT_LOCK_RETENTION 30d"}},
		{name: "missing config dir", env: map[string]string{"BACKUP_CONFIG_DIR": "/does/not/exist"}, wantMsg: []string{"BACKUP_CONFIG_DIR", "/does/not/exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			delete(env, tc.unset)
			_, err := Load("run", tc.args, envOf(env), io.Discard)
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want *Error, got %v", err)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if tc.notMsg != "" && strings.Contains(err.Error(), tc.notMsg) {
				t.Errorf("error %q leaks %q", err, tc.notMsg)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	_, err := Load("run", []string{"--help"}, envOf(nil), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), "--"+s.flagName()) || !strings.Contains(out.String(), "$"+s.env) {
			t.Errorf("help does not document %s", s.env)
		}
	}
	for _, k := range configMapKeys() {
		if !strings.Contains(out.String(), k.name) {
			t.Errorf("help does not document ConfigMap key %s", k.name)
		}
	}
}

func TestLoadReadsConfigDir(t *testing.T) {
	dir := t.TempDir()
	// Lay the directory out as the kubelet does: keys are symlinks into a
	// timestamped directory reached through ..data.
	ts := filepath.Join(dir, "..2026_11_26_00_00_00.000000001")
	must(t, os.Mkdir(ts, 0o755))
	must(t, os.WriteFile(filepath.Join(ts, "filtering-mode"), []byte("whitelist\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(ts, "include-resources"), []byte("deployments\nservices\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(ts, "batch-size"), []byte("9"), 0o644))
	must(t, os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")))
	for _, k := range []string{"filtering-mode", "include-resources", "batch-size"} {
		must(t, os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)))
	}

	c, err := Load("run", nil, envOf(map[string]string{"CLUSTER_NAME": "e", "BACKUP_CONFIG_DIR": dir, "BATCH_SIZE": "3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules.Mode != filter.Whitelist || !reflect.DeepEqual(c.Rules.IncludeResources, []string{"deployments", "services"}) {
		t.Errorf("rules = %+v", c.Rules)
	}
	if c.BatchSize != 9 {
		t.Errorf("batch-size key did not override BATCH_SIZE: %d", c.BatchSize)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
