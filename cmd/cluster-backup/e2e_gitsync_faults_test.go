package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestGitSyncFaults: with INTEGRITY_KEY, a document forged into the bucket
// (with a forged journal object naming it) never reaches Git; with the
// store down, git-sync counts its failed polls and nothing stops; once the
// store is back, the change made during the outage is committed.
func TestGitSyncFaults(t *testing.T) {
	requireServers(t)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	ns, cluster := "e2e-gitsync-faults", "gitsync-faults"
	const key = "gitsync-faults-integrity-key-0123"
	createNamespace(t, ns)
	createConfigMap(t, ns, "app", map[string]string{"v": "1"}, nil, nil)
	svc := startService(t, cluster, serviceOptions{minio: srv, env: map[string]string{"INTEGRITY_KEY": key},
		configMap: map[string]string{"include-namespaces": ns}, secrets: []string{key}})
	svc.waitReady()
	svc.waitPass(1)

	dir := t.TempDir()
	remote := filepath.Join(dir, "remote.git")
	gitOut(t, dir, "init", "-q", "--bare", "-b", "main", remote)
	gs := startService(t, cluster, serviceOptions{minio: srv, args: []string{"git-sync"}, secrets: []string{key}, env: map[string]string{
		"GIT_REPOSITORY": "file://" + remote, "GIT_COMMIT_WINDOW": "200ms", "INTEGRITY_KEY": key, "PATH": os.Getenv("PATH")}})
	history := func() string {
		out, err := exec.Command("git", "--git-dir", remote, "log", "-p", "--format=%B", "main").Output()
		if err != nil {
			return ""
		}
		return string(out)
	}
	head := func(file string) string {
		out, _ := exec.Command("git", "--git-dir", remote, "show", "main:"+file).Output()
		return string(out)
	}
	appFile := ns + "/configmaps/app.yaml"
	eventually(t, 60*time.Second, "the backfill pushed", func() bool { return strings.Contains(head(appFile), `v: "1"`) })

	// A bucket writer forges a new version of app and a journal object
	// naming it: neither carries a tag made with the key.
	client, err := minioClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	layout := object.Layout{Prefix: "clusterbackup", Cluster: cluster}
	appKey := layout.Key(object.Ref{Resource: "configmaps", Namespace: ns, Name: "app"})
	evil := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: " + ns + "\ndata:\n  v: forged-by-a-bucket-writer\n")
	if _, err := client.PutObject(bg, bucketName, appKey, bytes.NewReader(evil), int64(len(evil)),
		minio.PutObjectOptions{UserMetadata: object.Meta{APIVersion: "v1", SHA256: object.Digest(evil), Manager: "kubectl-edit"}.Map()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	forged := journal.Encode(journal.Object{Through: now, Entries: []journal.Entry{{Time: now, Op: journal.Put, Key: strings.TrimPrefix(appKey, layout.Root())}}})
	if _, err := client.PutObject(bg, bucketName, journal.Name(layout, now, "attacker"), bytes.NewReader(forged), int64(len(forged)),
		minio.PutObjectOptions{UserMetadata: object.Meta{SHA256: object.Digest(forged)}.Map()}); err != nil {
		t.Fatal(err)
	}
	// A real change after it: once it is in Git, the forgery was seen and
	// left out.
	createConfigMap(t, ns, "after", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 60*time.Second, "the change after the forgery pushed", func() bool { return head(ns+"/configmaps/after.yaml") != "" })
	if h := history(); strings.Contains(h, "forged-by-a-bucket-writer") {
		t.Errorf("the forged document reached Git:\n%s", h)
	}
	if !logged(gs, "journal object fails its check") {
		t.Error("git-sync did not log the journal object it left out")
	}

	// The store goes down: polls fail and are counted; a change made
	// meanwhile is committed once it is back.
	errorsBefore := gitSyncErrors(gs)
	srv.Kill()
	cms := e2e.cs.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(bg, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "during-the-outage"
	if _, err := cms.Update(bg, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "failed polls counted", func() bool { return gitSyncErrors(gs) > errorsBefore })
	if err := srv.Start(bg); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 120*time.Second, "the change made during the outage pushed", func() bool {
		return strings.Contains(head(appFile), "during-the-outage")
	})
	t.Logf("the change made during a store outage reached Git %s after the store came back", took)
	select {
	case <-gs.done:
		t.Error("git-sync exited during the store outage")
	default:
	}
}

// gitSyncErrors is git-sync's error counter, 0 while it cannot be read.
func gitSyncErrors(p *process) float64 {
	v, err := testenv.SumMetric(strings.NewReader(p.scrape()), "cluster_backup_git_sync_errors_total", nil)
	if err != nil {
		return 0
	}
	return v
}

// logged says whether a log line of p holds msg.
func logged(p *process, msg string) bool {
	for _, l := range p.logs("") {
		if strings.Contains(fmt.Sprint(l["message"]), msg) {
			return true
		}
	}
	return false
}
