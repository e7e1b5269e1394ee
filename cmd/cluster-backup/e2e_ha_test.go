package main

import (
	"syscall"
	"testing"
	"time"
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
