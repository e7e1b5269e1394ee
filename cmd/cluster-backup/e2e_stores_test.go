package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
