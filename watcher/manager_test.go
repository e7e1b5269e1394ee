package watcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// recorder is a Queue that remembers what it was given.
type recorder struct {
	mu   sync.Mutex
	refs map[object.Ref]int
}

func (r *recorder) Enqueue(ref object.Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refs[ref]++
}

func (r *recorder) Offer(ref object.Ref) bool {
	r.Enqueue(ref)
	return true
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestManagerAgainstTheAPIServer drives a Manager on a real API server:
// what it may prune, what it reports incomplete, and how a reload behaves
// while the API server is down.
func TestManagerAgainstTheAPIServer(t *testing.T) {
	testenv.Require(t, "etcd", "kube-apiserver")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startCtx, startCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer startCancel()
	kube, err := testenv.StartKube(startCtx, testenv.KubeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer kube.Stop()
	cs := kubernetes.NewForConfigOrDie(kube.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "m"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "m"}, StringData: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().Secrets("m").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "m"}, Data: map[string]string{"k": name}}
		if _, err := cs.CoreV1().ConfigMaps("m").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	dyn, err := NewDynamicClient(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	rules := filter.DefaultRules()
	rules.Mode = filter.Whitelist
	rules.IncludeResources = []string{"configmaps"}
	rules.IncludeNamespaces = []string{"m"}
	m := New(dyn, discovery.NewDiscoveryClientForConfigOrDie(kube.Config), &recorder{refs: map[object.Ref]int{}},
		Options{Rules: rules, Rediscover: time.Hour}, zap.NewNop(), metrics.New(prometheus.NewRegistry()))
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { m.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	if err := m.WaitForSync(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	cmA := object.Ref{Resource: "configmaps", Namespace: "m", Name: "a"}
	for _, tc := range []struct {
		name string
		ref  object.Ref
		want object.State
	}{
		{"cached", cmA, object.Present},
		{"not in a complete cache", object.Ref{Resource: "configmaps", Namespace: "m", Name: "gone"}, object.Absent},
		{"namespace left out by the rules", object.Ref{Resource: "configmaps", Namespace: "kube-system", Name: "x"}, object.Absent},
		{"type served and left out by the rules", object.Ref{Resource: "secrets", Namespace: "m", Name: "s"}, object.Absent},
		{"type the server does not serve", object.Ref{Group: "nowhere.example.com", Resource: "things", Namespace: "m", Name: "t"}, object.Unknown},
		{"wrong group for a served plural", object.Ref{Resource: "deployments", Namespace: "m", Name: "d"}, object.Unknown},
	} {
		if _, state, err := m.Document(tc.ref); err != nil || state != tc.want {
			t.Errorf("%s: state %v (%v), want %v", tc.name, state, err, tc.want)
		}
	}
	for _, tc := range []struct {
		segment  string
		group    string
		prunable bool
	}{
		{"configmaps", "", true},      // complete cache
		{"deployments", "apps", true}, // served, left out by the whitelist
		{"things.nowhere.example.com", "", false},
	} {
		gr, prunable := m.Resolve(tc.segment)
		if group := gr.Group; group != tc.group || prunable != tc.prunable {
			t.Errorf("Resolve(%s) = %q %v, want %q %v", tc.segment, group, prunable, tc.group, tc.prunable)
		}
	}

	// A reload while the API server is down changes nothing, then applies.
	if err := kube.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	wider := rules
	wider.IncludeResources = []string{"configmaps", "secrets"}
	wider.IncludeStatus = true // rebuilds every informer
	if err := m.SetRules(ctx, wider); err == nil {
		t.Fatal("SetRules succeeded with the API server down")
	}
	if _, state, _ := m.Document(cmA); state != object.Present {
		t.Errorf("after a failed reload, a cached object is %v", state)
	}
	if _, prunable := m.Resolve("configmaps"); !prunable {
		t.Error("after a failed reload, the complete cache is no longer trusted")
	}
	secretRef := object.Ref{Resource: "secrets", Namespace: "m", Name: "s"}
	if _, state, _ := m.Document(secretRef); state != object.Absent {
		t.Errorf("the rules in force changed although the reload failed: the Secret is %v", state)
	}
	if err := kube.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	poll(t, 90*time.Second, "the reload to apply once the API server is back", func() bool {
		_, state, _ := m.Document(secretRef)
		return state == object.Present
	})
	if err := m.WaitForSync(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := m.Incomplete(); len(got) != 0 {
		t.Errorf("incomplete after the sync: %v", got)
	}
}
