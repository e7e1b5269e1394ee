package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
	"github.com/cluster-backup/cluster-backup/restore"
)

// TestForgedDocumentsAreRefused: with INTEGRITY_KEY, a document rewritten
// in the bucket by whoever holds its credentials (valid YAML, a matching
// sha256, even the genuine document's tag) is refused by name by show,
// verify and restore; an unsigned one is refused unless --accept-unsigned;
// a restore to a time before the tampering brings the namespace back; and
// the service rewrites the tampered current versions, at its restart and
// on the next pass while it runs.
func TestForgedDocumentsAreRefused(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-integrity", "integrity"
	const key = "integrity-key-e2e-0123456789"
	createNamespace(t, ns)
	createConfigMap(t, ns, "settings", map[string]string{"mode": "fast"}, nil, nil)
	createConfigMap(t, ns, "plain", map[string]string{"a": "1"}, nil, nil)
	createConfigMap(t, ns, "kept", map[string]string{"b": "2"}, nil, nil)
	opts := serviceOptions{
		env:       map[string]string{"INTEGRITY_KEY": key},
		configMap: map[string]string{"include-namespaces": ns},
		secrets:   []string{key},
	}
	s := startService(t, cluster, opts)
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	if got := s.metric("cluster_backup_documents_signed", nil); got != 1 {
		t.Errorf("cluster_backup_documents_signed %v, want 1", got)
	}
	settingsKey, plainKey := s.key(ns, "configmaps", "settings"), s.key(ns, "configmaps", "plain")
	genuine, err := e2e.bucket.StatObject(bg, bucketName, settingsKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tag := object.MetaFromMap(genuine.UserMetadata).Integrity
	if !strings.HasPrefix(tag, object.NewSigner([]byte(key)).KeyID()+".") {
		t.Fatalf("the stored document's integrity tag is %q", tag)
	}
	s.stop()
	// A time after the backup and before the tampering, in whole seconds.
	before := time.Now().Truncate(time.Second).Add(time.Second)
	eventually(t, 5*time.Second, "the next second", func() bool { return time.Now().After(before) })
	withKey := map[string]string{"CLUSTER_NAME": cluster, "INTEGRITY_KEY": key}

	// The attacker writes valid documents with matching digests: one with
	// the genuine tag replayed, one with no tag.
	forge := func(key, body string, meta map[string]string) {
		t.Helper()
		md := map[string]string{object.MetaAPIVersion: "v1"}
		maps.Copy(md, meta)
		forgeVersion(t, key, body, md)
	}
	forge(settingsKey, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: "+ns+"\ndata:\n  mode: evil\n",
		map[string]string{object.MetaIntegrity: tag, object.MetaClusterUID: object.MetaFromMap(genuine.UserMetadata).ClusterUID})
	forge(plainKey, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  namespace: "+ns+"\ndata:\n  a: \"2\"\n", nil)

	out, stderr, code := cliWith(t, e2e.minio, withKey, "verify", "-n", ns)
	if code != exitPartial || !strings.Contains(out, "forged     "+settingsKey) || !strings.Contains(out, "unsigned   "+plainKey) ||
		strings.Contains(out, s.key(ns, "configmaps", "kept")) {
		t.Errorf("verify: exit %d, want %d, naming the forged and the unsigned document only\n%s%s", code, exitPartial, out, stderr)
	}
	if out, stderr, code := cliWith(t, e2e.minio, withKey, "show", "configmaps/settings", "-n", ns); code != exitFailed || strings.Contains(out, "evil") || !strings.Contains(stderr, "integrity tag") {
		t.Errorf("show of the forged document: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, code := cliWith(t, e2e.minio, withKey, "show", "configmaps/plain", "-n", ns, "--accept-unsigned"); code != exitOK || !strings.Contains(out, `a: "2"`) {
		t.Errorf("show --accept-unsigned of the unsigned document: exit %d\n%s", code, out)
	}
	// Without the key nothing is checked, and the command says so.
	if _, stderr, code := cli(t, cluster, "show", "configmaps/settings", "-n", ns); code != exitOK || !strings.Contains(stderr, "INTEGRITY_KEY is not set") {
		t.Errorf("show without the key: exit %d\n%s", code, stderr)
	}

	deleteNamespace(t, ns)
	path := filepath.Join(t.TempDir(), "report.json")
	_, stderr, code = cliWith(t, e2e.minio, withKey, "restore", "-n", ns, "--report", path)
	if code != exitPartial {
		t.Fatalf("restore over tampered documents: exit %d, want %d\n%s", code, exitPartial, stderr)
	}
	rep := readReport(t, path)
	for _, name := range []string{"settings", "plain"} {
		if !slices.ContainsFunc(rep.Objects, func(r restore.Result) bool {
			return r.Name == name && r.Outcome == restore.Failed && strings.Contains(r.Reason, "integrity tag")
		}) {
			t.Errorf("%s: not refused; report %+v", name, rep.Objects)
		}
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, "settings", metav1.GetOptions{}); err == nil {
		t.Error("the forged ConfigMap was restored")
	}
	// Before the tampering, every document is the service's.
	deleteNamespace(t, ns)
	at := before.UTC().Format(time.RFC3339)
	if _, stderr, code := cliWith(t, e2e.minio, withKey, "restore", "-n", ns, "--at", at); code != exitOK {
		t.Fatalf("restore --at %s: exit %d\n%s", at, code, stderr)
	}
	for name, want := range map[string]map[string]string{"settings": {"mode": "fast"}, "plain": {"a": "1"}, "kept": {"b": "2"}} {
		if cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, name, metav1.GetOptions{}); err != nil || !maps.Equal(cm.Data, want) {
			t.Errorf("%s restored as of %s: %v %v, want %v", name, at, cm.Data, err, want)
		}
	}

	// A restart rewrites what it does not accept, before anything changes.
	opts.env["SNAPSHOT_INTERVAL"] = "3s"
	s = startService(t, cluster, opts)
	s.waitPass(1)
	verified := func() bool {
		_, _, code := cliWith(t, e2e.minio, withKey, "verify", "-n", ns)
		return code == exitOK
	}
	eventually(t, time.Minute, "the tampered documents rewritten after a restart", verified)
	// While it runs, the next pass repairs a new forgery.
	forge(settingsKey, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: "+ns+"\ndata:\n  mode: evil-again\n", nil)
	if verified() {
		t.Fatal("verify accepts a forged document")
	}
	eventually(t, time.Minute, "the forgery rewritten by the next pass", verified)
	if out, _, code := cliWith(t, e2e.minio, withKey, "show", "configmaps/settings", "-n", ns); code != exitOK || !strings.Contains(out, "mode: fast") {
		t.Errorf("show after the repair: exit %d\n%s", code, out)
	}
}

// TestForgedRestorePackIsNotBelieved: a restore pack rebuilt by whoever
// can write the bucket (the genuine documents, tagged with a key that is
// not the installation's) is not used: diff and restore read every
// document from its own key, and restore what the service wrote.
func TestForgedRestorePackIsNotBelieved(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-forged-pack", "forged-pack"
	const key = "integrity-key-pack-0123456789"
	createNamespace(t, ns)
	for i := range 20 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%02d", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	s := startService(t, cluster, serviceOptions{
		env:       map[string]string{"INTEGRITY_KEY": key, "RESTORE_PACK_INTERVAL": "1s"},
		configMap: map[string]string{"include-namespaces": ns},
		secrets:   []string{key},
	})
	s.waitPass(1)
	layout := object.Layout{Prefix: "clusterbackup", Cluster: cluster}
	eventually(t, 30*time.Second, "the restore pack", func() bool { return s.versions(layout.PackKey()) > 0 })
	s.stop()
	withKey := map[string]string{"CLUSTER_NAME": cluster, "INTEGRITY_KEY": key}
	_, stderr, code := cliWith(t, e2e.minio, withKey, "diff", "-n", ns)
	if fromPack, _ := readCounts(t, stderr); code != exitOK || fromPack < 20 {
		t.Fatalf("diff with the service's pack: exit %d, %d documents from the pack\n%s", code, fromPack, stderr)
	}

	// The attacker rebuilds the pack from the stored documents, tagged
	// with a key of their own.
	forger := object.NewSigner([]byte("not-the-installation-key-0123"))
	var keys []string
	for k := range storedUnder(t, e2e.bucket, "clusterbackup/"+cluster+"/") {
		if _, ok := layout.Parse(k); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var forged bytes.Buffer
	w := pack.NewWriter(&forged)
	for _, k := range keys {
		o, err := e2e.bucket.GetObject(bg, bucketName, k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			t.Fatal(err)
		}
		info, err := e2e.bucket.StatObject(bg, bucketName, k, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		meta := object.MetaFromMap(info.UserMetadata)
		meta.Integrity = forger.Sign(k, meta)
		if err := w.Add(k, meta, pack.Compress(nil, body, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e2e.bucket.PutObject(bg, bucketName, layout.PackKey(), bytes.NewReader(forged.Bytes()), int64(forged.Len()), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = cliWith(t, e2e.minio, withKey, "diff", "-n", ns)
	if fromPack, fromKeys := readCounts(t, stderr); code != exitOK || fromPack != 0 || fromKeys < 20 {
		t.Errorf("diff with a forged pack: exit %d, %d documents from the pack, %d from keys; want 0, every one from its key\n%s", code, fromPack, fromKeys, stderr)
	}
	_, stderr, code = cliWith(t, e2e.minio, withKey, "restore", "-n", ns, "--namespace-mapping", ns+":"+ns+"-copy")
	if fromPack, _ := readCounts(t, stderr); code != exitOK || fromPack != 0 {
		t.Errorf("restore with a forged pack: exit %d, %d documents from the pack\n%s", code, fromPack, stderr)
	}
	if cm, err := e2e.cs.CoreV1().ConfigMaps(ns+"-copy").Get(bg, "cm-07", metav1.GetOptions{}); err != nil || cm.Data["i"] != "7" {
		t.Errorf("cm-07 restored past a forged pack: %v %v", cm.Data, err)
	}
}
