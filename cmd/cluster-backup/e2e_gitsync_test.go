package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/testenv"
)

// gitOut runs git and returns its output.
func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=ops", "GIT_AUTHOR_EMAIL=ops@example.com",
		"GIT_COMMITTER_NAME=ops", "GIT_COMMITTER_EMAIL=ops@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bucketAt is the cluster's stored documents at t, computed from the raw
// version listing: each key's newest version at or before t, none when
// that is a delete marker. Keys outside the object layout and Secrets
// (stored in the clear here) are left out, as git-sync leaves them out.
func bucketAt(t *testing.T, cluster string, at time.Time) map[string]string {
	t.Helper()
	root := "clusterbackup/" + cluster + "/"
	newest := map[string]minio.ObjectInfo{}
	for o := range e2e.bucket.ListObjects(context.Background(), bucketName, minio.ListObjectsOptions{Prefix: root, Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		rel := strings.TrimPrefix(o.Key, root)
		if strings.Count(rel, "/") != 2 || !strings.HasSuffix(rel, ".yaml") || strings.Contains(rel, "/secrets/") || o.LastModified.After(at) {
			continue
		}
		if cur, ok := newest[rel]; !ok || o.LastModified.After(cur.LastModified) {
			newest[rel] = o
		}
	}
	out := map[string]string{}
	for rel, o := range newest {
		if o.IsDeleteMarker {
			continue
		}
		obj, err := e2e.bucket.GetObject(context.Background(), bucketName, o.Key, minio.GetObjectOptions{VersionID: o.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		st, err := obj.Stat()
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, st.Size)
		if _, err := obj.Read(body); err != nil && err.Error() != "EOF" {
			t.Fatal(err)
		}
		out[rel] = string(body)
	}
	return out
}

// TestGitSyncHistory backfills a history of creates, updates, deletes and
// a re-create into a bare repository, then follows: every commit's tree is
// exactly the bucket at the commit's synced-through time; a push rejected
// by a commit made on the remote is rebased and pushed; restarts with and
// without the persistent clone commit nothing twice; no plaintext Secret
// reaches any commit.
func TestGitSyncHistory(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-gitsync", "gitsync"
	createNamespace(t, ns)
	svc := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	svc.waitReady()
	svc.waitPass(1)
	cms := e2e.cs.CoreV1().ConfigMaps(ns)
	stored := func(name string, versions int) {
		t.Helper()
		key := svc.key(ns, "configmaps", name)
		eventually(t, 30*time.Second, fmt.Sprintf("%s at %d versions", key, versions), func() bool { return svc.versions(key) >= versions })
	}
	createConfigMap(t, ns, "app", map[string]string{"v": "1"}, nil, nil)
	stored("app", 1)
	createConfigMap(t, ns, "doomed", map[string]string{"v": "1"}, nil, nil)
	stored("doomed", 1)
	secretValue := "plaintext-secret-value-4711"
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"password": secretValue}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Secret stored", func() bool { return svc.versions(svc.key(ns, "secrets", "creds")) >= 1 })
	update := func(name, v string, versions int) {
		t.Helper()
		cm, err := cms.Get(bg, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["v"] = v
		if _, err := cms.Update(bg, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		stored(name, versions)
	}
	update("app", "2", 2)
	if err := cms.Delete(bg, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the delete stored", func() bool {
		_, err := e2e.bucket.StatObject(bg, bucketName, svc.key(ns, "configmaps", "doomed"), minio.StatObjectOptions{})
		return err != nil && minio.ToErrorResponse(err).Code == "NoSuchKey"
	})
	createConfigMap(t, ns, "doomed", map[string]string{"v": "again"}, nil, nil)
	stored("doomed", 2)

	dir := t.TempDir()
	remote := filepath.Join(dir, "remote.git")
	gitOut(t, dir, "init", "-q", "--bare", "-b", "main", remote)
	syncEnv := map[string]string{"GIT_REPOSITORY": "file://" + remote, "GIT_COMMIT_WINDOW": "200ms", "PATH": os.Getenv("PATH")}
	commitsOf := func() []string {
		out := gitOut(t, remote, "log", "--format=%H", "main")
		return strings.Fields(out)
	}
	syncedThrough := func(commit string) time.Time {
		out := strings.TrimSpace(gitOut(t, remote, "log", "-1", "--format=%(trailers:key=Cluster-Backup-Synced-Through,valueonly)", commit))
		if out == "" {
			return time.Time{}
		}
		at, err := time.Parse(time.RFC3339Nano, out)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	// caughtUp waits until the branch holds every version written so far.
	caughtUp := func(what string) {
		t.Helper()
		newest := time.Time{}
		for o := range e2e.bucket.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/" + cluster + "/", Recursive: true, WithVersions: true}) {
			if strings.Count(strings.TrimPrefix(o.Key, "clusterbackup/"+cluster+"/"), "/") == 2 && o.LastModified.After(newest) {
				newest = o.LastModified
			}
		}
		took := eventually(t, 60*time.Second, what, func() bool {
			out, err := exec.Command("git", "--git-dir", remote, "log", "--format=%(trailers:key=Cluster-Backup-Synced-Through,valueonly)", "main").Output()
			if err != nil {
				return false
			}
			for _, line := range strings.Fields(string(out)) {
				at, err := time.Parse(time.RFC3339Nano, line)
				return err == nil && !at.Before(newest)
			}
			return false
		})
		t.Logf("%s: in the remote after %s", what, took)
	}

	gs := startService(t, cluster, serviceOptions{args: []string{"git-sync"}, env: syncEnv, secrets: []string{secretValue}})
	caughtUp("backfill")
	backfilled := commitsOf()
	if len(backfilled) < 3 {
		t.Errorf("backfill made %d commits, want one per window of a history spread over several", len(backfilled))
	}
	checkTrees := func() {
		t.Helper()
		work := filepath.Join(t.TempDir(), "check")
		gitOut(t, dir, "clone", "-q", remote, work)
		for _, c := range commitsOf() {
			at := syncedThrough(c)
			if at.IsZero() {
				continue // a commit of someone else
			}
			want := bucketAt(t, cluster, at)
			files := strings.Fields(gitOut(t, work, "ls-tree", "-r", "--name-only", c))
			got := map[string]string{}
			for _, f := range files {
				if strings.Count(f, "/") == 2 {
					got[f] = gitOut(t, work, "show", c+":"+f)
				}
			}
			if len(got) != len(want) {
				var g, w []string
				for k := range got {
					g = append(g, k)
				}
				for k := range want {
					w = append(w, k)
				}
				sort.Strings(g)
				sort.Strings(w)
				t.Errorf("commit %.8s (synced through %s): %d files, the bucket then held %d\n git: %v\n bucket: %v", c, at, len(got), len(want), g, w)
				continue
			}
			for k, body := range want {
				if got[k] != body {
					t.Errorf("commit %.8s: %s differs from the bucket at %s", c, k, at)
				}
			}
		}
	}
	checkTrees()
	msg := gitOut(t, remote, "log", "--format=%B", "main")
	for _, want := range []string{"A v1/ConfigMap " + ns + "/app", "M v1/ConfigMap " + ns + "/app", "D v1/ConfigMap " + ns + "/doomed", "A v1/ConfigMap " + ns + "/doomed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("no commit line %q in\n%s", want, msg)
		}
	}
	// The author is the field manager that made the change, as the
	// service recorded it; the committer is git-sync.
	authors := gitOut(t, remote, "log", "-F", "--grep", "M v1/ConfigMap "+ns+"/app rv=", "--format=%an <%ae>|%cn|%B", "main")
	if !strings.HasPrefix(authors, "kubectl-edit <kubectl-edit@field-manager.invalid>|cluster-backup|") || !strings.Contains(authors, "by=kubectl-edit") {
		t.Errorf("the update by kubectl-edit is committed as\n%s", authors)
	}
	// The service journals each write beside the backup, with its manager.
	journaled := ""
	for o := range e2e.bucket.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/_journal/" + cluster + "/", Recursive: true}) {
		obj, err := e2e.bucket.GetObject(bg, bucketName, o.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(obj)
		journaled += string(body)
	}
	for _, want := range []string{"\tput\t" + ns + "/configmaps/app.yaml\t", "\tkubectl-edit\n", "\tdelete\t" + ns + "/configmaps/doomed.yaml\t"} {
		if !strings.Contains(journaled, want) {
			t.Errorf("the change journal holds no %q:\n%s", want, journaled)
		}
	}

	// A commit made on the remote: the next push is rejected, rebased,
	// pushed; nothing is lost on either side.
	other := filepath.Join(dir, "other")
	gitOut(t, dir, "clone", "-q", remote, other)
	if err := os.WriteFile(filepath.Join(other, "OWNERS"), []byte("ops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitOut(t, other, "add", "OWNERS")
	gitOut(t, other, "commit", "-q", "-m", "a commit of someone else")
	gitOut(t, other, "push", "-q", "origin", "main")
	update("app", "3", 3)
	caughtUp("a change after a commit on the remote")
	if files := gitOut(t, remote, "ls-tree", "-r", "--name-only", "main"); !strings.Contains(files, "OWNERS") {
		t.Errorf("the remote's own commit was lost:\n%s", files)
	}
	gs.stop()

	// Restarts: without a clone, then twice with a persistent one.
	workdir := filepath.Join(dir, "clone")
	for i, env := range []map[string]string{syncEnv, {"GIT_WORKDIR": workdir}, {"GIT_WORKDIR": workdir}} {
		vars := map[string]string{}
		for k, v := range syncEnv {
			vars[k] = v
		}
		for k, v := range env {
			vars[k] = v
		}
		p := startService(t, cluster, serviceOptions{args: []string{"git-sync"}, env: vars, secrets: []string{secretValue}})
		update("app", string(rune('4'+i)), 4+i)
		caughtUp("a change after restart " + string(rune('1'+i)))
		p.stop()
	}
	checkTrees()
	seen := map[string]int{}
	for _, line := range strings.Split(gitOut(t, remote, "log", "--format=%B", "main"), "\n") {
		if i := strings.Index(line, " version="); i > 0 && (strings.HasPrefix(line, "A ") || strings.HasPrefix(line, "M ") || strings.HasPrefix(line, "D ")) {
			seen[line[i:]]++
		}
	}
	for v, n := range seen {
		if n > 1 {
			t.Errorf("%s committed %d times", v, n)
		}
	}
	if t.Failed() || os.Getenv("GITSYNC_SHOW_LOG") != "" {
		t.Log(gitOut(t, remote, "log", "-p", "-3", "main", "--", ns))
	}
	if all := gitOut(t, remote, "log", "--all", "-p"); strings.Contains(all, secretValue) || strings.Contains(all, "cGxhaW50ZXh0LXNlY3JldC12YWx1ZS00NzEx") {
		t.Error("a plaintext Secret value is in the repository's history")
	}
}

// TestGitSyncOverHTTP pushes to a real smart-HTTP git server (git
// http-backend) that asks for basic auth: the credentials come from
// GIT_CREDENTIALS_FILE and never show in a log or a metric; with a wrong
// token every failed sync is counted and nothing stops: the right token
// in the same file later gets the history pushed.
func TestGitSyncOverHTTP(t *testing.T) {
	requireServers(t)
	ns, cluster := "e2e-gitsync-http", "gitsync-http"
	createNamespace(t, ns)
	createConfigMap(t, ns, "app", map[string]string{"v": "1"}, nil, nil)
	svc := startService(t, cluster, serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	svc.waitReady()
	svc.waitPass(1)

	dir := t.TempDir()
	gitOut(t, dir, "init", "-q", "--bare", "-b", "main", filepath.Join(dir, "history.git"))
	const user, token = "ops", "s3cr3t-token-0815"
	srv := testenv.StartGitHTTP(dir, user, token)
	defer srv.Close()
	creds := filepath.Join(dir, "credentials")
	writeCreds := func(secret string) {
		t.Helper()
		line := strings.Replace(srv.URL, "http://", "http://"+user+":"+secret+"@", 1) + "\n"
		if err := os.WriteFile(creds, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCreds("wrong-token")
	gs := startService(t, cluster, serviceOptions{args: []string{"git-sync"}, secrets: []string{token, "wrong-token"}, env: map[string]string{
		"GIT_REPOSITORY": srv.URL + "/history.git", "GIT_CREDENTIALS_FILE": creds, "PATH": os.Getenv("PATH"),
	}})
	scraped := func(name string) float64 {
		v, err := testenv.SumMetric(strings.NewReader(gs.scrape()), name, nil)
		if err != nil {
			return 0 // not serving yet
		}
		return v
	}
	eventually(t, 60*time.Second, "a failed sync counted", func() bool {
		return scraped("cluster_backup_git_sync_errors_total") > 0
	})
	writeCreds(token)
	eventually(t, 90*time.Second, "the history pushed with the right token", func() bool {
		out, err := exec.Command("git", "--git-dir", filepath.Join(dir, "history.git"), "log", "--format=%B", "main").Output()
		return err == nil && strings.Contains(string(out), "A v1/ConfigMap "+ns+"/app")
	})
	eventually(t, 30*time.Second, "the push time exported", func() bool {
		return scraped("cluster_backup_git_sync_last_push_timestamp_seconds") > 0
	})

	// The token revoked: a change is committed, its pushes fail and are
	// counted, sync after sync; the token restored, the commit left
	// behind is pushed without another change.
	writeCreds("wrong-token")
	failed := scraped("cluster_backup_git_sync_errors_total")
	createConfigMap(t, ns, "later", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 2*time.Minute, "the pushes of a later sync failing too", func() bool {
		return scraped("cluster_backup_git_sync_errors_total") >= failed+7 // five tries, the sync, a later sync
	})
	writeCreds(token)
	eventually(t, 90*time.Second, "the commit left behind pushed", func() bool {
		out, err := exec.Command("git", "--git-dir", filepath.Join(dir, "history.git"), "log", "--format=%B", "main").Output()
		return err == nil && strings.Contains(string(out), "A v1/ConfigMap "+ns+"/later")
	})
}
