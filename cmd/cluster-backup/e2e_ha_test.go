package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLeaderElectionFailover(t *testing.T) {
	requireServers(t)
	ns := "e2e-ha"
	createNamespace(t, ns)
	env := func(pod string) map[string]string {
		return map[string]string{
			"LEADER_ELECT": "true", "LEADER_ELECTION_NAMESPACE": ns, "LEASE_DURATION": "4s", "POD_NAME": pod,
		}
	}
	cfg := map[string]string{"include-namespaces": ns}
	a := startService(t, "ha", serviceOptions{env: env("replica-a"), configMap: cfg})
	a.waitReady()
	a.waitPass(1)
	b := startService(t, "ha", serviceOptions{env: env("replica-b"), configMap: cfg})
	b.waitReady() // a standby is ready, and idle
	eventually(t, 10*time.Second, "b to see a as leader", func() bool { return len(b.logs("leader_election")) >= 2 })
	if b.metric("cluster_backup_leader", nil) != 0 || a.metric("cluster_backup_leader", nil) != 1 {
		t.Fatal("want a leading and b standing by")
	}
	createConfigMap(t, ns, "while-a-leads", map[string]string{"v": "1"}, nil, nil)
	eventually(t, 5*time.Second, "the leader to write", func() bool { return a.body(a.key(ns, "configmaps", "while-a-leads")) != "" })
	if len(b.logs("backup_complete")) != 0 || b.metric("cluster_backup_resources_total", map[string]string{"action": "written"}) != 0 {
		t.Error("the standby wrote")
	}

	// The leader dies without releasing its lease.
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	createConfigMap(t, ns, "after-failover", map[string]string{"v": "1"}, nil, nil)
	took := eventually(t, 60*time.Second, "the standby to take over and write", func() bool {
		return b.body(b.key(ns, "configmaps", "after-failover")) != ""
	})
	t.Logf("a change made when the leader died landed %s later (lease 4s)", took.Round(time.Millisecond))
	if b.metric("cluster_backup_leader", nil) != 1 {
		t.Error("b does not report leading")
	}
}

// TestRollingHandoverDoesNotOverlap: the old leader flushes its pending
// writes before it releases the Lease, so nothing it writes lands after the
// new leader's first pass has started.
func TestRollingHandoverDoesNotOverlap(t *testing.T) {
	requireServers(t)
	ns := "e2e-handover"
	createNamespace(t, ns)
	const n = 40
	for i := range n {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"v": "0"}, nil, nil)
	}
	env := func(pod string) map[string]string {
		return map[string]string{
			"LEADER_ELECT": "true", "LEADER_ELECTION_NAMESPACE": ns, "LEASE_DURATION": "4s", "POD_NAME": pod,
			// Changes wait in the queue, and the flush takes seconds.
			"DEBOUNCE": "20s", "STORE_QPS": "10", "BATCH_SIZE": "2",
		}
	}
	cfg := map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps", "include-namespaces": ns}
	a := startService(t, "handover", serviceOptions{env: env("replica-a"), configMap: cfg})
	a.waitPass(1)
	b := startService(t, "handover", serviceOptions{env: env("replica-b"), configMap: cfg})
	b.waitReady()
	for i := range n {
		cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Get(bg, fmt.Sprintf("cm-%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["v"] = "1"
		if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the changes to wait in a's queue", func() bool {
		return a.metric("cluster_backup_queue_depth", nil) >= n/2
	})
	a.stop() // SIGTERM: a rolling update
	start := b.waitPass(1)
	passStart := logTime(t, b.logs("snapshot_start")[0])
	if d, _ := start["data"].(map[string]any); d["backed_up"] != 0.0 {
		t.Errorf("the new leader's first pass found the old leader's flush unfinished: %v", d)
	}
	late := 0
	for v := range e2e.bucket.ListObjects(bg, bucketName, minio.ListObjectsOptions{Prefix: "clusterbackup/handover/" + ns + "/", Recursive: true, WithVersions: true}) {
		if v.Err != nil {
			t.Fatal(v.Err)
		}
		if v.LastModified.After(passStart) {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d object versions landed after the new leader's first pass started at %s", late, passStart)
	}
}

func logTime(t *testing.T, line map[string]any) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["timestamp"]))
	if err != nil {
		t.Fatalf("log timestamp: %v", err)
	}
	return ts
}

// TestFailedTakeoverReleasesTheLease: a replica that takes the lead but
// cannot start (the store is down) gives the Lease up and exits 1 instead
// of holding it while backing nothing up.
func TestFailedTakeoverReleasesTheLease(t *testing.T) {
	requireServers(t)
	ns := "e2e-takeover"
	createNamespace(t, ns)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	env := func(pod string) map[string]string {
		return map[string]string{
			"LEADER_ELECT": "true", "LEADER_ELECTION_NAMESPACE": ns, "LEASE_DURATION": "4s", "POD_NAME": pod,
			"RETRY_ATTEMPTS": "0",
		}
	}
	cfg := map[string]string{"include-namespaces": ns}
	a := startService(t, "takeover", serviceOptions{minio: srv, env: env("replica-a"), configMap: cfg})
	a.waitPass(1)
	b := startService(t, "takeover", serviceOptions{minio: srv, env: env("replica-b"), configMap: cfg})
	b.waitReady()
	srv.Kill()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := b.waitExit(90*time.Second, "a replica that could not start leading"); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lease, err := e2e.cs.CoordinationV1().Leases(ns).Get(bg, "cluster-backup-takeover", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease is still held by %q", *h)
	}
}
