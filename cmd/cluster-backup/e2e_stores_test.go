package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// poll is eventually without failing: it reports whether cond came true.
func poll(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestDistributedMinIONodeFailure backs up to MinIO as production runs it:
// four server processes, one drive each, one erasure set. A node is killed
// while changes stream in and brought back later: no change is lost, the
// service never restarts, and /readyz stays honest (the set keeps its write
// quorum, so the store stays up).
func TestDistributedMinIONodeFailure(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes, err := testenv.StartMinIOCluster(ctx, t.TempDir(), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Stop()
		}
	})
	ns, objects := "e2e-distributed", 40
	createNamespace(t, ns)
	for i := range objects {
		createConfigMap(t, ns, fmt.Sprint("cm-", i), map[string]string{"n": "0"}, nil, nil)
	}
	s := startService(t, "distributed", serviceOptions{minio: nodes[0], configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)

	// /readyz, every 100 ms, until the end of the test.
	var notReady atomic.Int32
	probing, stopProbing := context.WithCancel(ctx)
	var probes sync.WaitGroup
	probes.Go(func() {
		for probing.Err() == nil {
			if code := s.get("/readyz"); code != http.StatusOK {
				notReady.Add(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	last := make([]int, objects)
	update := func(round int) {
		for i := range objects {
			cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, fmt.Sprint("cm-", i), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cm.Data["n"] = fmt.Sprint(round)
			if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			last[i] = round
		}
	}
	written := func() float64 {
		return s.metric("cluster_backup_resources_total", map[string]string{"action": "written"})
	}
	var atKill float64
	for round := 1; round <= 12; round++ {
		switch round {
		case 3:
			nodes[2].Kill()
			atKill = written()
		case 9:
			if w := written(); w < atKill+float64(objects) {
				t.Errorf("%v objects written while a node was down, want at least a round of %d", w-atKill, objects)
			}
			if err := nodes[2].Start(ctx); err != nil {
				t.Fatalf("node 3 back: %v", err)
			}
		}
		update(round)
		time.Sleep(500 * time.Millisecond)
	}
	for i := range objects {
		key, want := s.key(ns, "configmaps", fmt.Sprint("cm-", i)), fmt.Sprintf(`"n": "%d"`, last[i])
		if !poll(30*time.Second, func() bool { return strings.Contains(s.body(key), want) }) {
			t.Fatalf("%s does not hold its last change %s:\n%s", key, want, s.body(key))
		}
	}
	stopProbing()
	probes.Wait()
	select {
	case <-s.done:
		t.Fatalf("the service exited: %v", s.exitErr)
	default:
	}
	if n := notReady.Load(); n != 0 {
		t.Errorf("/readyz failed %d times while the set kept its write quorum", n)
	}
	if up := s.metric("cluster_backup_store_up", nil); up != 1 {
		t.Errorf("store_up = %v after the node came back", up)
	}
}

// TestSeaweedFS runs the service against a second S3 implementation,
// whose listings carry no user metadata: the change index keeps a restart
// and a pass over an unchanged cluster from writing anything, and a change
// made while the service was down is written exactly once.
func TestSeaweedFS(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, client := seaweedFS(ctx, t)
	ns, cluster := "e2e-seaweedfs", "seaweedfs"
	createNamespace(t, ns)
	for i := range 20 {
		createConfigMap(t, ns, fmt.Sprint("cm-", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	opts := serviceOptions{
		env:       weedEnv(srv, map[string]string{"SNAPSHOT_INTERVAL": "3s"}),
		configMap: map[string]string{"include-namespaces": ns},
		secrets:   []string{srv.AccessKey, srv.SecretKey},
	}
	versions := func(key string) int {
		n := 0
		for v := range client.ListObjects(ctx, bucketName, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
			if v.Err == nil && v.Key == key && !v.IsDeleteMarker {
				n++
			}
		}
		return n
	}
	body := func(key string) string { return readObject(ctx, client, key) }
	key := func(name string) string {
		return fmt.Sprintf("clusterbackup/%s/%s/configmaps/%s.yaml", cluster, ns, name)
	}

	first := startService(t, cluster, opts)
	first.waitPass(2)
	eventually(t, 10*time.Second, "an empty queue", func() bool { return first.metric("cluster_backup_queue_depth", nil) == 0 })
	caps := first.logs("minio_connect")
	if !hasMessage(caps, "Store capabilities") {
		t.Errorf("no capabilities line: %v", caps)
	}
	for _, l := range caps {
		if l["message"] == "Store capabilities" {
			if d, _ := l["data"].(map[string]any); d["metadata_in_listings"] != false || d["change_index"] != true {
				t.Errorf("capabilities on SeaweedFS: %v", d)
			}
		}
	}
	// 20 and the namespace's kube-root-ca.crt, each once: the second
	// pass writes none.
	if w := first.metric("cluster_backup_resources_total", map[string]string{"action": "written", "resource": "configmaps"}); w != 21 {
		t.Errorf("the first run wrote %v ConfigMaps over two passes, want 21", w)
	}
	first.stop()
	before := versions(key("cm-3"))

	// A change while the service is down.
	setData(t, ns, "cm-3", "i", "changed while down")
	second := startService(t, cluster, opts)
	second.waitPass(2)
	eventually(t, 10*time.Second, "the change written", func() bool { return strings.Contains(body(key("cm-3")), "changed while down") })
	if w := second.metric("cluster_backup_resources_total", map[string]string{"action": "written", "resource": "configmaps"}); w != 1 {
		t.Errorf("a restart over 20 unchanged ConfigMaps and one changed wrote %v, want 1", w)
	}
	if n := versions(key("cm-3")); before > 0 && n != before+1 {
		t.Errorf("the changed ConfigMap has %d versions, want %d", n, before+1)
	}
	if n := versions(key("cm-5")); n > 1 {
		t.Errorf("an unchanged ConfigMap has %d versions", n)
	}
}

// TestStoreWithoutVersioningAPI runs the service against a store that
// answers the bucket versioning and lifecycle calls with NotImplemented, as
// some S3 gateways do: a front before the real MinIO refuses those calls
// and passes everything else on. The service creates its bucket, reports
// the store as keeping no versions, backs up, and holds deletes back
// (REQUIRE_VERSIONING, on by default): the last backup of a deleted object
// is the only copy on such a store.
func TestStoreWithoutVersioningAPI(t *testing.T) {
	requireServers(t)
	var refused atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: e2e.minio.Endpoint})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("versioning") || q.Has("lifecycle") {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>`+
				`<Message>A header you provided implies functionality that is not implemented</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	const bucket = "unversioned"
	ns := "e2e-no-versioning-api"
	createNamespace(t, ns)
	createConfigMap(t, ns, "kept", map[string]string{"a": "b"}, nil, nil)
	createConfigMap(t, ns, "deleted", map[string]string{"a": "b"}, nil, nil)
	s := startService(t, "no-versioning-api", serviceOptions{
		env: map[string]string{
			"MINIO_ENDPOINT": strings.TrimPrefix(front.URL, "http://"), "MINIO_BUCKET": bucket,
			"SNAPSHOT_INTERVAL": "2s", "NONCURRENT_RETENTION": "7d",
		},
		configMap: map[string]string{"include-namespaces": ns},
	})
	s.waitReady()
	s.waitPass(1)
	if refused.Load() == 0 {
		t.Fatal("the front refused no call: the test does not test a store without versioning")
	}
	connected, retention := false, false
	for _, l := range s.logs("minio_connect") {
		d, _ := l["data"].(map[string]any)
		connected = connected || l["message"] == "Connected to MinIO" && d["versioning"] == "unsupported"
		retention = retention || strings.Contains(fmt.Sprint(l["message"]), "cannot set the retention rule")
	}
	if !connected || !retention {
		t.Errorf("the connect lines do not report versioning and the retention rule as unsupported: %v", s.logs("minio_connect"))
	}
	if v := s.metric("cluster_backup_bucket_versioning", nil); v != 0 {
		t.Errorf("cluster_backup_bucket_versioning = %v, want 0", v)
	}
	client, err := minioClient(e2e.minio)
	if err != nil {
		t.Fatal(err)
	}
	exists := func(key string) bool {
		_, err := client.StatObject(bg, bucket, key, minio.StatObjectOptions{})
		return err == nil
	}
	deleted := s.key(ns, "configmaps", "deleted")
	eventually(t, 10*time.Second, "both objects stored", func() bool { return exists(deleted) && exists(s.key(ns, "configmaps", "kept")) })
	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "deleted", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	passes := len(s.logs("backup_complete"))
	s.waitPass(passes + 2)
	if !exists(deleted) {
		t.Error("the backup of a deleted object was removed from a store that keeps no versions")
	}
	if v := s.metric("cluster_backup_prune_guard_tripped", nil); v != 1 {
		t.Errorf("cluster_backup_prune_guard_tripped = %v, want 1", v)
	}
}

// TestSideObjectsFailSafely runs the service against SeaweedFS behind a
// front that fails every write of the change index and of the restore pack
// with an internal error, as a store in trouble would. The service keeps
// backing up, says what failed, and loses nothing: the
// next start, without the front, finds no index, writes every object once
// again (safe rewrites, the change made while it was down among them),
// then writes the index and the pack, and the start after that writes
// nothing.
func TestSideObjectsFailSafely(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv, client := seaweedFS(ctx, t)
	var refused atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: srv.Endpoint})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		side := strings.HasSuffix(r.URL.Path, "/cluster-index.tsv.zst") || strings.HasSuffix(r.URL.Path, "/cluster-pack.bin")
		if side && r.Method != http.MethodGet && r.Method != http.MethodHead {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>`+
				`<Message>We encountered an internal error, please try again.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	ns, cluster := "e2e-side-objects", "side-objects"
	createNamespace(t, ns)
	for i := range 20 {
		createConfigMap(t, ns, fmt.Sprint("cm-", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	env := func(endpoint string) serviceOptions {
		return serviceOptions{
			env: map[string]string{
				"MINIO_ENDPOINT": endpoint, "MINIO_ACCESS_KEY": srv.AccessKey, "MINIO_SECRET_KEY": srv.SecretKey,
				"SNAPSHOT_INTERVAL": "3s",
			},
			configMap: map[string]string{"include-namespaces": ns},
			secrets:   []string{srv.AccessKey, srv.SecretKey},
		}
	}
	written := func(s *process) float64 {
		return s.metric("cluster_backup_resources_total", map[string]string{"action": "written", "resource": "configmaps"})
	}
	warned := func(s *process, message string) bool {
		for _, l := range s.logs("") {
			if l["level"] == "warn" && strings.HasPrefix(fmt.Sprint(l["message"]), message) {
				return true
			}
		}
		return false
	}

	first := startService(t, cluster, env(strings.TrimPrefix(front.URL, "http://")))
	first.waitPass(1)
	eventually(t, time.Minute, "the failed writes reported", func() bool {
		return warned(first, "Cannot write the change index") && warned(first, "Cannot write the restore pack")
	})
	// Backing up goes on.
	setData(t, ns, "cm-0", "i", "changed during the fault")
	eventually(t, 30*time.Second, "the change written during the fault", func() bool { return written(first) == 22 })
	if e := first.metric("cluster_backup_errors_total", map[string]string{"operation": "object_write"}); e < 2 {
		t.Errorf("errors_total{operation=object_write} = %v, want the index and the pack counted", e)
	}
	first.stop()
	if refused.Load() == 0 {
		t.Fatal("the front refused nothing: the test tests no failure")
	}

	setData(t, ns, "cm-3", "i", "changed while down")
	second := startService(t, cluster, env(srv.Endpoint))
	second.waitPass(2)
	eventually(t, 30*time.Second, "the index and the pack written", func() bool {
		return hasMessage(second.logs("object_write"), "Restore pack written") && second.metric("cluster_backup_queue_depth", nil) == 0
	})
	if w := written(second); w != 21 {
		t.Errorf("without an index the restart wrote %v ConfigMaps, want each once again (21)", w)
	}
	if stored := readObject(ctx, client, second.key(ns, "configmaps", "cm-3")); !strings.Contains(stored, "changed while down") {
		t.Errorf("the change made while the service was down is not stored:\n%s", stored)
	}
	second.stop()

	third := startService(t, cluster, env(srv.Endpoint))
	third.waitPass(2)
	if w := written(third); w != 0 {
		t.Errorf("a restart over an unchanged cluster with its index wrote %v ConfigMaps", w)
	}
	third.stop()
}

// seaweedFS starts a SeaweedFS server for the test and a client of it.
func seaweedFS(ctx context.Context, t *testing.T) (*testenv.SeaweedFS, *minio.Client) {
	t.Helper()
	testenv.Require(t, "weed")
	srv, err := testenv.StartSeaweedFS(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	client, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return srv, client
}

// weedEnv points the service or a command at the SeaweedFS server srv,
// with extra added.
func weedEnv(srv *testenv.SeaweedFS, extra map[string]string) map[string]string {
	env := map[string]string{"MINIO_ENDPOINT": srv.Endpoint, "MINIO_ACCESS_KEY": srv.AccessKey, "MINIO_SECRET_KEY": srv.SecretKey}
	maps.Copy(env, extra)
	return env
}

// readObject reads the current version of key, "" when it cannot.
func readObject(ctx context.Context, client *minio.Client, key string) string {
	o, err := client.GetObject(ctx, bucketName, key, minio.GetObjectOptions{})
	if err != nil {
		return ""
	}
	defer o.Close()
	b, _ := io.ReadAll(o)
	return string(b)
}

// setData sets one key of a ConfigMap's data.
func setData(t *testing.T, ns, name, key, value string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"data": map[string]string{key: value}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Patch(bg, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestForgedChangeIndexIsIgnored: on a store whose listings carry no
// metadata (SeaweedFS), the change index tells a restart what is already
// stored. With INTEGRITY_KEY it carries a tag: a restart over an unchanged
// cluster trusts it and writes nothing; an index rewritten by anyone else
// (the same entries, without the tag) is ignored, said so, and every
// object is written again once.
func TestForgedChangeIndexIsIgnored(t *testing.T) {
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, client := seaweedFS(ctx, t)
	ns, cluster := "e2e-forged-index", "forged-index"
	const key = "integrity-key-index-0123456789"
	createNamespace(t, ns)
	for i := range 5 {
		createConfigMap(t, ns, fmt.Sprint("cm-", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	opts := serviceOptions{
		env:       weedEnv(srv, map[string]string{"INTEGRITY_KEY": key}),
		configMap: map[string]string{"include-namespaces": ns},
		secrets:   []string{srv.AccessKey, srv.SecretKey, key},
	}
	written := func(s *process) float64 {
		return s.metric("cluster_backup_resources_total", map[string]string{"action": "written", "resource": "configmaps"})
	}
	first := startService(t, cluster, opts)
	first.waitPass(1)
	eventually(t, 30*time.Second, "an empty queue", func() bool { return first.metric("cluster_backup_queue_depth", nil) == 0 })
	all := written(first)
	first.stop() // writes the index
	indexKey := object.Layout{Prefix: "clusterbackup", Cluster: cluster}.IndexKey()
	info, err := client.StatObject(ctx, bucketName, indexKey, minio.StatObjectOptions{})
	if err != nil || object.MetaFromMap(info.UserMetadata).Integrity == "" {
		t.Fatalf("the change index %s: %v, metadata %v; want an integrity tag", indexKey, err, info.UserMetadata)
	}
	second := startService(t, cluster, opts)
	second.waitPass(1)
	if w := written(second); w != 0 {
		t.Errorf("a restart over an unchanged cluster with its signed index wrote %v ConfigMaps", w)
	}
	second.stop()

	// The same entries, rewritten without the tag.
	body := readObject(ctx, client, indexKey)
	if _, err := client.PutObject(ctx, bucketName, indexKey, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{
		UserMetadata: map[string]string{object.MetaSHA256: object.Digest([]byte(body))},
	}); err != nil {
		t.Fatal(err)
	}
	third := startService(t, cluster, opts)
	third.waitPass(1)
	eventually(t, 30*time.Second, "every ConfigMap written again", func() bool { return written(third) == all })
	if !hasMessage(third.logs("store_list"), "The change index is not signed with this installation's integrity key; objects without listed metadata are written again") {
		t.Error("the forged index was not reported")
	}
}

// TestStoreRetriesHaveOneOwner runs the service against a front before the
// real MinIO that answers the first PUTs of two keys with 503, as a store
// under load does: each key is written after exactly its failures plus
// one calls (no layer retries inside another), a key that recovers within
// RETRY_ATTEMPTS retries counts no error, and one that needs more counts
// each failure past them.
func TestStoreRetriesHaveOneOwner(t *testing.T) {
	requireServers(t)
	ns := "e2e-retries"
	createNamespace(t, ns)
	fail := map[string]int{"configmaps/blip.yaml": 2, "configmaps/outage.yaml": 5}
	var mu sync.Mutex
	calls := map[string]int{}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: e2e.minio.Endpoint})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			for suffix, n := range fail {
				if !strings.HasSuffix(r.URL.Path, "/"+ns+"/"+suffix) {
					continue
				}
				mu.Lock()
				calls[suffix]++
				refuse := calls[suffix] <= n
				mu.Unlock()
				if refuse {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "application/xml")
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
					return
				}
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	s := startService(t, "retries", serviceOptions{
		env:       map[string]string{"MINIO_ENDPOINT": strings.TrimPrefix(front.URL, "http://"), "RETRY_ATTEMPTS": "3", "RETRY_DELAY": "200ms"},
		configMap: map[string]string{"include-namespaces": ns},
	})
	s.waitReady()
	s.waitPass(1)
	for _, name := range []string{"blip", "outage"} {
		createConfigMap(t, ns, name, map[string]string{"a": "b"}, nil, nil)
	}
	for _, name := range []string{"blip", "outage"} {
		key := s.key(ns, "configmaps", name)
		eventually(t, 60*time.Second, name+" stored", func() bool { return s.body(key) != "" })
	}
	mu.Lock()
	got := maps.Clone(calls)
	mu.Unlock()
	for suffix, n := range fail {
		if got[suffix] != n+1 {
			t.Errorf("%s: %d PUTs for %d failures, want %d", suffix, got[suffix], n, n+1)
		}
	}
	// outage.yaml failed 5 times: the 4th and 5th are past the 3 retries.
	if got := s.metric("cluster_backup_errors_total", map[string]string{"operation": "object_write"}); got != 2 {
		t.Errorf("errors_total{operation=object_write} = %v, want 2", got)
	}
}
