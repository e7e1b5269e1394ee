package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// configMapsIn lists the ConfigMap names of a namespace, as the cluster has them.
func configMapsIn(t *testing.T, ns string) map[string]bool {
	t.Helper()
	list, err := e2e.cs.CoreV1().ConfigMaps(ns).List(bg, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, cm := range list.Items {
		out[cm.Name] = true
	}
	return out
}

// storedConfigMaps lists the ConfigMap names stored for a namespace.
func storedConfigMaps(s *process, ns string) map[string]bool {
	out := map[string]bool{}
	prefix := fmt.Sprintf("clusterbackup/%s/%s/configmaps/", s.cluster, ns)
	for k := range s.stored() {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			out[strings.TrimSuffix(name, ".yaml")] = true
		}
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func TestPassRepairsChangesMadeWhileDown(t *testing.T) {
	requireServers(t)
	ns := "e2e-offline"
	createNamespace(t, ns)
	for i := range 5 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"v": "1"}, nil, nil)
	}
	opts := serviceOptions{configMap: map[string]string{"include-namespaces": ns}}
	first := startService(t, "offline", opts)
	first.waitReady()
	first.waitPass(1)
	eventually(t, 10*time.Second, "the bucket to hold the namespace", func() bool {
		return sameSet(storedConfigMaps(first, ns), configMapsIn(t, ns))
	})
	first.stop()
	untouched := first.key(ns, "configmaps", "cm-4")
	untouchedETag := first.stored()[untouched].ETag
	untouchedVersions := first.versions(untouched)

	// While nobody watches: delete two, create two, change one.
	for _, name := range []string{"cm-0", "cm-1"} {
		if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createConfigMap(t, ns, "new-a", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, ns, "new-b", map[string]string{"v": "1"}, nil, nil)
	cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "cm-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "changed-offline"
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A key put by hand under this cluster's prefix with no live object, and
	// one under another cluster's prefix.
	orphan := first.key(ns, "configmaps", "put-by-hand")
	foreign := "clusterbackup/another-cluster/" + ns + "/configmaps/cm-0.yaml"
	for _, k := range []string{orphan, foreign} {
		if _, err := e2e.bucket.PutObject(bg, bucketName, k, strings.NewReader("kind: ConfigMap\n"), -1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	second := startService(t, "offline", serviceOptions{configMap: opts.configMap, env: map[string]string{"DEBOUNCE": "1h"}})
	second.waitReady()
	pass := second.waitPass(1)
	// With a one-hour debounce, only the first list (whose objects are
	// written as they stream in) and the pass can have repaired the bucket.
	if got, want := storedConfigMaps(second, ns), configMapsIn(t, ns); !sameSet(got, want) {
		t.Errorf("after one pass the bucket holds %v, the cluster %v", got, want)
	}
	if !strings.Contains(second.body(second.key(ns, "configmaps", "cm-2")), "changed-offline") {
		t.Error("offline change not repaired")
	}
	if _, ok := second.stored()[orphan]; ok {
		t.Error("orphan put by hand was not removed")
	}
	if _, ok := storedUnder(t, e2e.bucket, foreign)[foreign]; !ok {
		t.Error("another cluster's key was touched")
	}
	if info := second.stored()[untouched]; info.ETag != untouchedETag || second.versions(untouched) != untouchedVersions {
		t.Error("an untouched object was rewritten")
	}
	// Exactly the two new and the one changed object were written, while
	// the list streamed or by the pass; the pass deleted the two deleted
	// and the orphan.
	if w := second.metric("cluster_backup_resources_total", map[string]string{"resource": "configmaps", "action": "written"}); w != 3 {
		t.Errorf("%v ConfigMaps written, want 3 (two new, one changed)", w)
	}
	d, _ := pass["data"].(map[string]any)
	if d["deleted"] != 3.0 || d["errors"] != 0.0 {
		t.Errorf("backup_complete data %v: want deleted 3 (two deleted, one orphan)", d)
	}
	if second.metric("cluster_backup_last_success_timestamp_seconds", nil) < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Error("last success time not set")
	}
	if second.metric("cluster_backup_namespaces", nil) != 1 {
		t.Errorf("namespaces gauge %v, want 1", second.metric("cluster_backup_namespaces", nil))
	}
}

// writeConfigDir updates a mounted ConfigMap the way the kubelet does: a new
// timestamped directory, then an atomic swap of the ..data symlink.
func writeConfigDir(t *testing.T, dir string, data map[string]string) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..ts-")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	for k := range data {
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigReload(t *testing.T) {
	requireServers(t)
	keep, drop := "e2e-reload-keep", "e2e-reload-drop"
	for _, ns := range []string{keep, drop} {
		createNamespace(t, ns)
		createConfigMap(t, ns, "cm", map[string]string{"v": "1"}, nil, nil)
	}
	dir := t.TempDir()
	// Excluding a namespace deletes half of this small backup: more than
	// the default max-prune-fraction allows.
	base := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": keep + "\n" + drop, "max-prune-fraction": "1"}
	writeConfigDir(t, dir, base)
	s := startService(t, "reload", serviceOptions{env: map[string]string{"BACKUP_CONFIG_DIR": dir}})
	s.waitReady()
	s.waitPass(1)
	baseHash := s.metric("cluster_backup_config_hash", nil)
	if want := float64(config.Hash(base)); baseHash != want || s.metric("cluster_backup_config_reload_success", nil) != 1 {
		t.Errorf("at start: config hash %v (want %v), reload success %v", baseHash, want, s.metric("cluster_backup_config_reload_success", nil))
	}
	dropKey := s.key(drop, "configmaps", "cm")
	eventually(t, 10*time.Second, "both namespaces stored", func() bool { return s.body(dropKey) != "" })

	excluded := map[string]string{"exclude-namespaces": drop}
	for k, v := range base {
		excluded[k] = v
	}
	writeConfigDir(t, dir, excluded)
	eventually(t, 30*time.Second, "the excluded namespace to leave the bucket", func() bool {
		_, ok := s.stored()[dropKey]
		return !ok
	})
	createConfigMap(t, drop, "after-exclude", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, keep, "after-exclude", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 10*time.Second, "the kept namespace's new object", func() bool {
		return s.body(s.key(keep, "configmaps", "after-exclude")) != ""
	})
	if s.body(s.key(drop, "configmaps", "after-exclude")) != "" {
		t.Error("an object of the excluded namespace was written after the reload")
	}
	if got, want := s.metric("cluster_backup_config_hash", nil), float64(config.Hash(excluded)); got != want || got == baseHash {
		t.Errorf("after the reload: config hash %v, want %v (before: %v)", got, want, baseHash)
	}

	// An invalid edit is logged and counted; the rules in force stay.
	bad := map[string]string{"filtering-mode": "greylist"}
	for k, v := range excluded {
		if k != "filtering-mode" {
			bad[k] = v
		}
	}
	writeConfigDir(t, dir, bad)
	eventually(t, 30*time.Second, "a config_reload error", func() bool {
		for _, l := range s.logs("config_reload") {
			if l["level"] == "error" && strings.Contains(fmt.Sprint(l["error"]), "greylist") {
				return true
			}
		}
		return false
	})
	if s.metric("cluster_backup_errors_total", map[string]string{"operation": "config_reload"}) != 1 {
		t.Error("invalid reload not counted")
	}
	if s.metric("cluster_backup_config_reload_success", nil) != 0 || s.metric("cluster_backup_config_hash", nil) != float64(config.Hash(excluded)) {
		t.Error("a refused reload is not exported as reload_success 0 with the hash in force unchanged")
	}
	createConfigMap(t, keep, "after-bad-edit", map[string]string{"v": "1"}, nil, nil)
	createConfigMap(t, drop, "after-bad-edit", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 10*time.Second, "the old rules to keep working", func() bool {
		return s.body(s.key(keep, "configmaps", "after-bad-edit")) != ""
	})
	if s.body(s.key(drop, "configmaps", "after-bad-edit")) != "" {
		t.Error("the invalid edit changed the rules in force")
	}
}

func TestOneShotEqualsAlwaysOn(t *testing.T) {
	requireServers(t)
	ns := "e2e-oneshot"
	createNamespace(t, ns)
	for i := range 30 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i), "flag": "on"}, nil, nil)
	}
	cfg := map[string]string{"include-namespaces": ns}
	always := startService(t, "always-on", serviceOptions{configMap: cfg})
	always.waitReady()
	always.waitPass(1)
	eventually(t, 10*time.Second, "an empty queue", func() bool { return always.metric("cluster_backup_queue_depth", nil) == 0 })

	once := startService(t, "one-shot", serviceOptions{configMap: cfg, args: []string{"snapshot"}})
	select {
	case <-once.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("snapshot did not exit")
	}
	if once.exitErr != nil {
		t.Fatalf("snapshot exited with %v", once.exitErr)
	}
	if len(once.logs("backup_complete")) != 1 {
		t.Error("snapshot did not log backup_complete once")
	}
	a, o := always.stored(), once.stored()
	if len(a) == 0 || len(a) != len(o) {
		t.Fatalf("always-on stored %d keys, one-shot %d", len(a), len(o))
	}
	for k := range a {
		k2 := strings.Replace(k, "/always-on/", "/one-shot/", 1)
		if _, ok := o[k2]; !ok {
			t.Errorf("one-shot lacks %s", k2)
			continue
		}
		if always.body(k) != once.body(k2) {
			t.Errorf("%s differs between the modes", k)
		}
	}
}

func TestOneShotSummaryAndExitCode(t *testing.T) {
	requireServers(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := func(endpoint string) []string {
		return []string{
			"CLUSTER_NAME=one-shot-summary", "KUBECONFIG=" + e2e.kube.Kubeconfig,
			"MINIO_ENDPOINT=" + endpoint, "MINIO_ACCESS_KEY=" + e2e.minio.AccessKey, "MINIO_SECRET_KEY=" + e2e.minio.SecretKey,
			"MINIO_BUCKET=" + bucketName, "MINIO_USE_SSL=false", fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", port),
			"RETRY_ATTEMPTS=0",
		}
	}
	ctx, cancel := context.WithTimeout(bg, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.bin, "snapshot")
	cmd.Env = env(e2e.minio.Endpoint)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("snapshot: %v\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "backup: ") || !strings.Contains(stderr.String(), " written, ") {
		t.Errorf("stderr summary: %q", stderr.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("non-JSON line on stdout: %q", line)
		}
	}

	// An unreachable store: a clear error and a non-zero exit.
	cmd = exec.CommandContext(ctx, e2e.bin, "snapshot")
	cmd.Env = env("127.0.0.1:1")
	stderr.Reset()
	cmd.Stderr = &stderr
	var exit *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exit) || exit.ExitCode() != exitFailed {
		t.Errorf("snapshot with an unreachable store: %v, want exit code %d", err, exitFailed)
	}
	if strings.Contains(stderr.String(), e2e.minio.SecretKey) {
		t.Error("secret key in stderr")
	}
}
