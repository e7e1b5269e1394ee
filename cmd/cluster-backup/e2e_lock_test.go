package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// checksumFront is a store front that refuses, as AWS S3 does for a bucket
// with Object Lock, every upload (a PUT of an object or of a part) that
// carries no checksum: neither Content-MD5 nor an x-amz-checksum header
// nor a trailing checksum. MinIO does not enforce it.
type checksumFront struct {
	*httptest.Server
	mu      sync.Mutex
	refused []string
	uploads int
}

func newChecksumFront(t *testing.T, srv *testenv.MinIO) *checksumFront {
	f := &checksumFront{}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: srv.Endpoint})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Count(strings.Trim(r.URL.Path, "/"), "/") > 0 && r.Header.Get("X-Amz-Copy-Source") == "" {
			f.mu.Lock()
			f.uploads++
			if !hasChecksum(r.Header) {
				f.refused = append(f.refused, r.URL.Path)
				f.mu.Unlock()
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidRequest</Code><Message>Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters</Message></Error>`)
				return
			}
			f.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func hasChecksum(h http.Header) bool {
	if h.Get("Content-Md5") != "" || h.Get("X-Amz-Sdk-Checksum-Algorithm") != "" {
		return true
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(h.Get("X-Amz-Trailer")), "x-amz-checksum-")
}

func (f *checksumFront) counts() (uploads int, refused []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uploads, slices.Clone(f.refused)
}

// TestRansomwareDrill: a service with Object Lock and an integrity key; an
// attacker holding the service's own bucket credentials overwrites every
// document with valid YAML and a matching sha256, then tries to delete
// every version. The version deletes fail; verify names every tampered
// document; a restore of the current state refuses each; a restore to a
// time before the attack brings the namespace back exactly; the service's
// next pass (here, its restart) rewrites the current versions. Every
// upload the service makes carries a checksum, as AWS requires of a locked
// bucket.
func TestRansomwareDrill(t *testing.T) {
	requireServers(t)
	for _, mode := range []string{"compliance", "governance"} {
		t.Run(mode, func(t *testing.T) { ransomwareDrill(t, mode) })
	}
}

func ransomwareDrill(t *testing.T, mode string) {
	ns, cluster := "e2e-drill-"+mode, "drill-"+mode
	const key = "integrity-key-drill-0123456789"
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	front := newChecksumFront(t, srv)
	createNamespace(t, ns)
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token"}, StringData: map[string]string{"v": "1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{}
	for i := range 5 {
		name := fmt.Sprintf("cm-%d", i)
		want[name] = map[string]string{"n": fmt.Sprint(i), "mode": mode}
		createConfigMap(t, ns, name, want[name], nil, nil)
	}
	env := map[string]string{
		"MINIO_ENDPOINT": strings.TrimPrefix(front.URL, "http://"),
		"INTEGRITY_KEY":  key, "OBJECT_LOCK": mode, "OBJECT_LOCK_RETENTION": "1d",
		"RESTORE_PACK_INTERVAL": "1s",
	}
	opts := serviceOptions{env: env, minio: srv, configMap: map[string]string{"include-namespaces": ns}, secrets: []string{key}}
	s := startService(t, cluster, opts)
	s.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	layout := object.Layout{Prefix: "clusterbackup", Cluster: cluster}
	eventually(t, 30*time.Second, "the restore pack", func() bool { return s.versions(layout.PackKey()) > 0 })
	wantLock := map[string]float64{"governance": 1, "compliance": 2}[mode]
	if got := s.metric("cluster_backup_object_lock", nil); got != wantLock {
		t.Errorf("cluster_backup_object_lock %v, want %v", got, wantLock)
	}
	if !slices.ContainsFunc(s.logs(""), func(l map[string]any) bool {
		d, _ := l["data"].(map[string]any)
		return l["message"] == "Bucket object lock" && d["mode"] == mode && d["retention_days"] == float64(1)
	}) {
		t.Error("no start-up line reports the bucket's object lock")
	}
	uploads, refused := front.counts()
	if uploads == 0 || len(refused) > 0 {
		t.Errorf("%d uploads, refused without a checksum: %v", uploads, refused)
	}
	c := s.bucketClient()
	// The front can fail: an upload without a checksum is refused.
	if _, err := c.PutObject(bg, bucketName, "probe", strings.NewReader("x"), 1, minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
		t.Fatal(err) // directly to MinIO, which does not enforce it
	}
	req, _ := http.NewRequest(http.MethodPut, front.URL+"/"+bucketName+"/probe", strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an upload without a checksum through the front: %s, want 400", resp.Status)
	}
	// A Secret's older version, stored in the clear: purge says that the
	// lock keeps it, and deletes nothing.
	if _, err := e2e.cs.CoreV1().Secrets(ns).Update(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token"}, StringData: map[string]string{"v": "2"}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	secretKey := s.key(ns, "secrets", "token")
	eventually(t, 30*time.Second, "the Secret's second version", func() bool { return s.versions(secretKey) == 2 })
	if _, stderr, code := cliWith(t, srv, map[string]string{"CLUSTER_NAME": cluster}, "purge", "--plaintext-secrets", "--yes"); code != exitPartial || !strings.Contains(stderr, "Object Lock") || s.versions(secretKey) != 2 {
		t.Errorf("purge of a locked version: exit %d, %d versions left\n%s", code, s.versions(secretKey), stderr)
	}

	// A time after the backup and before the attack, in whole seconds.
	before := time.Now().Truncate(time.Second).Add(time.Second)
	eventually(t, 5*time.Second, "the next second", func() bool { return time.Now().After(before) })

	// The attack, with the service's own credentials.
	var tampered []string
	for o := range c.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/" + cluster + "/" + ns + "/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		k, _ := layout.Parse(o.Key)
		body := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  ransom: pay\n", k.Name, k.Namespace)
		if _, err := c.PutObject(bg, bucketName, o.Key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{
			UserMetadata: map[string]string{object.MetaSHA256: object.Digest([]byte(body)), object.MetaAPIVersion: "v1"},
		}); err != nil {
			t.Fatal(err)
		}
		tampered = append(tampered, o.Key)
	}
	// The namespace's ConfigMaps, its kube-root-ca.crt and its default
	// ServiceAccount.
	if len(tampered) < len(want)+2 {
		t.Fatalf("tampered %d documents, want at least %d", len(tampered), len(want)+2)
	}
	deleted, versions := 0, 0
	for v := range c.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/" + cluster + "/", Recursive: true, WithVersions: true}) {
		if v.Err != nil {
			t.Fatal(v.Err)
		}
		versions++
		if err := c.RemoveObject(bg, bucketName, v.Key, minio.RemoveObjectOptions{VersionID: v.VersionID}); err == nil && !v.IsDeleteMarker {
			deleted++
		}
	}
	// The attacker's own versions carry the default retention too.
	if deleted != 0 || versions < 2*len(want) {
		t.Errorf("%d of %d versions deleted, want none", deleted, versions)
	}

	withKey := map[string]string{"CLUSTER_NAME": cluster, "INTEGRITY_KEY": key}
	out, stderr, code := cliWith(t, srv, withKey, "verify", "-n", ns)
	for _, k := range tampered {
		if !strings.Contains(out, "unsigned   "+k) {
			t.Errorf("verify does not name %s:\n%s", k, out)
		}
	}
	if code != exitPartial {
		t.Errorf("verify after the attack: exit %d, want %d\n%s", code, exitPartial, stderr)
	}
	// The namespace stays in the cluster (the running service would back
	// its deletion up); the restores go to other namespaces.
	path := filepath.Join(t.TempDir(), "report.json")
	if _, stderr, code := cliWith(t, srv, withKey, "restore", "-n", ns, "--namespace-mapping", ns+":"+ns+"-now", "--report", path); code != exitPartial {
		t.Fatalf("restore of the current state: exit %d, want %d\n%s", code, exitPartial, stderr)
	}
	rep := readReport(t, path)
	if rep.Counts[restore.Failed] != len(tampered) {
		t.Errorf("restore of the current state: %v, want every tampered document (%d) failed", rep.Counts, len(tampered))
	}
	if list, err := e2e.cs.CoreV1().ConfigMaps(ns+"-now").List(bg, metav1.ListOptions{}); err == nil {
		for _, cm := range list.Items {
			if cm.Data["ransom"] != "" {
				t.Errorf("a forged ConfigMap was restored: %s", cm.Name)
			}
		}
	}
	at := before.UTC().Format(time.RFC3339)
	if _, stderr, code := cliWith(t, srv, withKey, "restore", "-n", ns, "--at", at, "--namespace-mapping", ns+":"+ns+"-then"); code != exitOK {
		t.Fatalf("restore --at %s (before the attack): exit %d\n%s", at, code, stderr)
	}
	for name, data := range want {
		if cm, err := e2e.cs.CoreV1().ConfigMaps(ns+"-then").Get(bg, name, metav1.GetOptions{}); err != nil || !maps.Equal(cm.Data, data) {
			t.Errorf("%s restored as of %s: %v %v, want %v", name, at, cm.Data, err, data)
		}
	}

	// The service's next pass (a restart here) rewrites the current
	// versions, through the front.
	s.stop()
	s = startService(t, cluster, opts)
	s.waitPass(1)
	eventually(t, time.Minute, "the tampered documents rewritten", func() bool {
		_, _, code := cliWith(t, srv, withKey, "verify", "-n", ns)
		return code == exitOK
	})
	if _, refused := front.counts(); len(refused) != 1 { // the probe
		t.Errorf("uploads refused without a checksum: %v, want the probe only", refused)
	}
}
