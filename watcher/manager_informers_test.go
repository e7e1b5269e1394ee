package watcher

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// stagingRecorder asks the manager for each object as it is offered, while
// the informer's first list is still streaming: the object must already
// be renderable then.
type stagingRecorder struct {
	mu     sync.Mutex
	m      *Manager
	states map[object.Ref]object.State
}

func (r *stagingRecorder) Enqueue(object.Ref) {}

func (r *stagingRecorder) Offer(ref object.Ref) bool {
	_, state, _ := r.m.Document(ref)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states[ref] = state
	return true
}

// startManager runs a Manager with rules as the identity of cfg until the
// test ends.
func startManager(t *testing.T, cfg *rest.Config, rules filter.Rules, queue Queue) *Manager {
	t.Helper()
	dyn, err := NewDynamicClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := New(dyn, discovery.NewDiscoveryClientForConfigOrDie(cfg), queue,
		Options{Rules: rules, Rediscover: time.Hour}, zap.NewNop(), metrics.New(prometheus.NewRegistry()))
	if r, ok := queue.(*stagingRecorder); ok {
		r.m = m
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// informerOf returns the running informer of a type, or nil.
func informerOf(m *Manager, group, resource string) *informer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.informers[schema.GroupResource{Group: group, Resource: resource}]
}

// TestManagerInformers runs Managers on a real API server as an identity
// that may not list Secrets, beside an aggregated API whose backend is
// missing: objects offered during the first list are already renderable,
// the denied type and the failing group are incomplete (never pruned), a
// rule change restarts only the informers it affects, and an object whose
// owner is backed up is kept.
func TestManagerInformers(t *testing.T) {
	testenv.Require(t, "etcd", "kube-apiserver")
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	kube, err := testenv.StartKube(startCtx, testenv.KubeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer kube.Stop()
	cs := kubernetes.NewForConfigOrDie(kube.Config)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "m"}}, metav1.CreateOptions{}))
	for i := range 50 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Namespace: "m"}}
		must(cs.CoreV1().ConfigMaps("m").Create(ctx, cm, metav1.CreateOptions{}))
	}
	must(cs.CoreV1().Secrets("m").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "m"}}, metav1.CreateOptions{}))
	one := int32(1)
	labels := map[string]string{"app": "web"}
	deploy, err := cs.AppsV1().Deployments("m").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "m"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, owned := range map[string]bool{"web-owned": true, "stray": false} {
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "m"},
			Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}},
		}
		if owned {
			controller := true
			rs.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: deploy.Name, UID: deploy.UID, Controller: &controller}}
		}
		must(cs.AppsV1().ReplicaSets("m").Create(ctx, rs, metav1.CreateOptions{}))
	}
	// The identity may list everything but Secrets.
	must(cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secrets"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps", "services", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets"}, Verbs: []string{"get", "list", "watch"}},
		},
	}, metav1.CreateOptions{}))
	must(cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "no-secrets"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "limited"}},
	}, metav1.CreateOptions{}))
	// An aggregated API whose backend does not exist: its group's
	// discovery fails.
	apiservices := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	must(dynamic.NewForConfigOrDie(kube.Config).Resource(apiservices).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1.broken.example.com"},
		"spec": map[string]any{
			"group": "broken.example.com", "version": "v1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true, "service": map[string]any{"name": "nowhere", "namespace": "m", "port": int64(443)},
		},
	}}, metav1.CreateOptions{}))
	poll(t, 30*time.Second, "discovery of the broken group to fail", func() bool {
		_, err := cs.Discovery().ServerResourcesForGroupVersion("broken.example.com/v1")
		return err != nil
	})

	limited := rest.CopyConfig(kube.Config)
	limited.Impersonate = rest.ImpersonationConfig{UserName: "limited"}
	rules := filter.DefaultRules()
	rules.Mode = filter.Whitelist
	rules.IncludeResources = []string{"configmaps", "secrets"}
	rules.IncludeNamespaces = []string{"m"}
	rec := &stagingRecorder{states: map[object.Ref]object.State{}}
	m := startManager(t, limited, rules, rec)
	_ = m.WaitForSync(ctx, 10*time.Second)

	t.Run("objects offered during the first list are renderable", func(t *testing.T) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		offered := 0
		for ref, state := range rec.states {
			if ref.Namespace != "m" {
				t.Errorf("%+v was offered although include-namespaces leaves it out", ref)
				continue
			}
			if ref.Resource == "configmaps" {
				offered++
			}
			if state != object.Present {
				t.Errorf("%+v was %v when offered", ref, state)
			}
		}
		if offered != 50 {
			t.Errorf("%d of 50 ConfigMaps offered during the first list", offered)
		}
	})

	t.Run("a denied type and a failing group are incomplete", func(t *testing.T) {
		poll(t, 30*time.Second, "secrets and the broken group to be incomplete", func() bool {
			inc := m.Incomplete()
			return slices.Contains(inc, "secrets") && slices.Contains(inc, "*.broken.example.com")
		})
		if inc := m.Incomplete(); slices.Contains(inc, "configmaps") {
			t.Errorf("configmaps incomplete: %v", inc)
		}
		if _, state, _ := m.Document(object.Ref{Resource: "secrets", Namespace: "m", Name: "s"}); state != object.Unknown {
			t.Errorf("a Secret the identity may not list is %v, want Unknown", state)
		}
		if _, prunable := m.Resolve("secrets"); prunable {
			t.Error("stored Secrets would be pruned although they cannot be listed")
		}
	})

	t.Run("a rule change restarts only the informers it affects", func(t *testing.T) {
		cms := informerOf(m, "", "configmaps")
		wider := rules
		wider.IncludeResources = []string{"configmaps", "secrets", "services"}
		if err := m.SetRules(ctx, wider); err != nil {
			t.Fatal(err)
		}
		if informerOf(m, "", "services") == nil {
			t.Error("no informer for the newly included services")
		}
		if informerOf(m, "", "configmaps") != cms {
			t.Error("adding a type restarted the ConfigMap informer")
		}
		reshaped := wider
		reshaped.IncludeStatus = true // changes every stored document
		if err := m.SetRules(ctx, reshaped); err != nil {
			t.Fatal(err)
		}
		if informerOf(m, "", "configmaps") == cms {
			t.Error("include-status changed and the ConfigMap informer was kept")
		}
		poll(t, 30*time.Second, "the rebuilt caches to sync", func() bool { return m.Synced() })
		if _, state, _ := m.Document(object.Ref{Resource: "configmaps", Namespace: "m", Name: "cm-aa"}); state != object.Present {
			t.Errorf("after the rebuild a ConfigMap is %v", state)
		}
	})

	t.Run("an object whose owner is backed up is kept", func(t *testing.T) {
		owners := filter.DefaultRules()
		owners.Mode = filter.Whitelist
		owners.IncludeResources = []string{"deployments"}
		owners.IncludeNamespaces = []string{"m"}
		owners.FollowOwnerReferences = true
		om := startManager(t, limited, owners, &recorder{refs: map[object.Ref]int{}})
		if err := om.WaitForSync(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]object.State{"web-owned": object.Present, "stray": object.Absent} {
			ref := object.Ref{Group: "apps", Resource: "replicasets", Namespace: "m", Name: name}
			if _, state, _ := om.Document(ref); state != want {
				t.Errorf("ReplicaSet %s is %v, want %v", name, state, want)
			}
		}

		// An owner and its dependents come on different watches: a
		// ReplicaSet judged while its Deployment is not cached yet is left
		// out, and judged again when the Deployment arrives.
		deployments := informerOf(om, "apps", "deployments")
		item, exists, err := deployments.inf.GetStore().GetByKey("m/web")
		if err != nil || !exists {
			t.Fatalf("the Deployment is not cached: %v", err)
		}
		if err := deployments.inf.GetStore().Delete(item); err != nil {
			t.Fatal(err)
		}
		rs := object.Ref{Group: "apps", Resource: "replicasets", Namespace: "m", Name: "web-owned"}
		if _, state, _ := om.Document(rs); state != object.Absent {
			t.Fatalf("with its owner not cached the ReplicaSet is %v, want Absent", state)
		}
		queue := om.queue.(*recorder)
		queue.mu.Lock()
		before := queue.refs[rs]
		queue.mu.Unlock()
		must(cs.AppsV1().Deployments("m").Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"annotations":{"touched":"1"}}}`), metav1.PatchOptions{}))
		poll(t, 30*time.Second, "the ReplicaSet queued again when its owner arrives", func() bool {
			queue.mu.Lock()
			defer queue.mu.Unlock()
			return queue.refs[rs] > before
		})
		if _, state, _ := om.Document(rs); state != object.Present {
			t.Errorf("with its owner back the ReplicaSet is %v, want Present", state)
		}
	})
}
