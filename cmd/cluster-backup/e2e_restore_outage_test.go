package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestRestoreThroughOutages stops the API server, then kills MinIO, each
// in the middle of a restore: the restore reports every object it could
// not bring back, exits 3 (partial) in bounded time, and once the server
// is back the same command finishes the job, leaving alone what the
// interrupted run had already restored.
func TestRestoreThroughOutages(t *testing.T) {
	requireServers(t)
	c := privateCluster(t)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	const objects = 120
	src := "outage-src"
	c.configMaps(t, src, objects, nil, "cm")
	// Two backups of the same namespace: one read object by object, one
	// with its restore pack.
	env := map[string]string{"KUBECONFIG": c.kube.Kubeconfig, "CLUSTER_NAME": "restore-outage", "RESTORE_PACK_INTERVAL": "0"}
	// The pack's backup holds the namespace and its ConfigMaps only, so
	// that the half of the pack received before the fault (below) holds
	// some of them: the pack is in key order, cluster-scoped objects first.
	packConfig := t.TempDir()
	for k, v := range map[string]string{"include-namespaces": src, "filtering-mode": "whitelist", "include-resources": "namespaces\nconfigmaps\n"} {
		if err := os.WriteFile(filepath.Join(packConfig, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	packEnv := map[string]string{"KUBECONFIG": c.kube.Kubeconfig, "CLUSTER_NAME": "restore-outage-pack", "BACKUP_CONFIG_DIR": packConfig}
	for _, e := range []map[string]string{env, packEnv} {
		if _, stderr, code := cliWith(t, srv, e, "snapshot"); code != 0 {
			t.Fatalf("snapshot: exit %d\n%s", code, stderr)
		}
	}
	// The ConfigMaps of the backup live in ns (a cluster without a
	// controller manager publishes no kube-root-ca.crt).
	live := func(ns string) int {
		list, err := c.cs.CoreV1().ConfigMaps(ns).List(bg, metav1.ListOptions{})
		if err != nil {
			return -1
		}
		n := 0
		for _, cm := range list.Items {
			if strings.HasPrefix(cm.Name, "cm-") {
				n++
			}
		}
		return n
	}
	restoreInto := func(srv *testenv.MinIO, env map[string]string, ns string, extra ...string) (report, int, string) {
		path := filepath.Join(t.TempDir(), "report.json")
		args := append([]string{"restore", "-n", src, "--namespace-mapping", src + ":" + ns, "--report", path}, extra...)
		_, stderr, code := cliWith(t, srv, env, args...)
		var rep report
		if b, err := os.ReadFile(path); err == nil {
			_ = json.Unmarshal(b, &rep)
		}
		return rep, code, stderr
	}
	// One run interrupted by fault (with runEnv), one after the server is
	// back (with env).
	interrupted := func(name, ns string, env, runEnv map[string]string, fault, recover func(), extra ...string) {
		t.Helper()
		var rep report
		var code int
		var stderr string
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			rep, code, stderr = restoreInto(srv, runEnv, ns, extra...)
		}()
		fault()
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s: the restore did not end within 3 minutes of the fault", name)
		}
		t.Logf("%s: exit %d after %s, %v", name, code, time.Since(start).Round(time.Millisecond), rep.Counts)
		if code != exitPartial {
			t.Errorf("%s: exit %d, want %d (partial)\n%s", name, code, exitPartial, lastLines(stderr, 5))
		}
		restored := rep.Counts[restore.Created]
		if restored == 0 || rep.Counts[restore.Failed] == 0 {
			t.Errorf("%s: counts %v, want some created before the fault and some failed after it\n%s", name, rep.Counts, lastLines(stderr, 5))
		}
		for _, o := range rep.Objects {
			if o.Outcome == restore.Failed && o.Reason == "" {
				t.Errorf("%s: %s failed without a reason", name, o.Name)
			}
		}
		recover()
		again, code, stderr := restoreInto(srv, env, ns)
		if code != 0 {
			t.Fatalf("%s: the restore after the outage: exit %d\n%s", name, code, lastLines(stderr, 5))
		}
		if got := live(ns); got != objects {
			t.Errorf("%s: %d ConfigMaps in %s after the second run, want %d", name, got, ns, objects)
		}
		if again.Counts[restore.Unchanged] < restored {
			t.Errorf("%s: the second run rewrote objects the first had restored: %v after %v", name, again.Counts, rep.Counts)
		}
	}

	// The API server stops once 30 objects are back.
	interrupted("API server stopped", "outage-api", env, env, func() {
		eventually(t, time.Minute, "30 objects restored", func() bool { return live("outage-api") >= 30 })
		if err := c.kube.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
	}, func() {
		if err := c.kube.StartAPIServer(bg); err != nil {
			t.Fatal(err)
		}
	}, "--qps", "20", "--parallel", "4")

	// MinIO is killed when the restore has read 30 documents: a front
	// before it sees the reads.
	var reads atomic.Int32
	var kill sync.Once
	killed := make(chan struct{})
	// Later, the pack is cut short instead.
	var cutPack atomic.Bool
	var packKill sync.Once
	packKilled := make(chan struct{})
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: srv.Endpoint})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cutPack.Load() && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/cluster-pack.bin") {
			sendHalf(t, w, r, srv.Endpoint)
			packKill.Do(func() {
				srv.Kill()
				close(packKilled)
			})
			panic(http.ErrAbortHandler) // the client sees the answer end early
		}
		isRead := r.Method == http.MethodGet && strings.Count(strings.Trim(r.URL.Path, "/"), "/") > 0
		if isRead && reads.Add(1) == 30 {
			kill.Do(func() {
				srv.Kill()
				close(killed)
			})
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	via := func(env map[string]string) map[string]string {
		out := map[string]string{"MINIO_ENDPOINT": strings.TrimPrefix(front.URL, "http://")}
		for k, v := range env {
			out[k] = v
		}
		return out
	}
	interrupted("MinIO killed", "outage-store", env, via(env), func() {
		select {
		case <-killed:
		case <-time.After(time.Minute):
			t.Fatal("the restore never read 30 documents")
		}
	}, func() {
		if err := srv.Start(bg); err != nil {
			t.Fatal(err)
		}
	}, "--parallel", "8")

	// MinIO is killed half way through sending the restore pack: the
	// restore uses the entries it received, reads the rest from their
	// keys (which fail while MinIO is down), and the next run finishes.
	cutPack.Store(true)
	interrupted("MinIO killed while sending the pack", "outage-pack", packEnv, via(packEnv), func() {
		select {
		case <-packKilled:
		case <-time.After(time.Minute):
			t.Fatal("the restore never read the pack")
		}
	}, func() {
		if err := srv.Start(bg); err != nil {
			t.Fatal(err)
		}
	}, "--parallel", "8")
}

// sendHalf forwards r to endpoint and copies the first half of the answer.
func sendHalf(t *testing.T, w http.ResponseWriter, r *http.Request, endpoint string) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.RequestURI = "http", endpoint, ""
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		t.Errorf("forward the pack: %v", err)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
	w.(http.Flusher).Flush()
}
