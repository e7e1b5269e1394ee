package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/object"
)

var bg = context.Background()

func createNamespace(t *testing.T, name string) {
	t.Helper()
	_, err := e2e.cs.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func createConfigMap(t *testing.T, ns, name string, data map[string]string, labels, annotations map[string]string) *corev1.ConfigMap {
	t.Helper()
	cm, err := e2e.cs.CoreV1().ConfigMaps(ns).Create(bg, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func TestChangesReachTheBucket(t *testing.T) {
	requireServers(t)
	ns := "e2e-changes"
	createNamespace(t, ns)
	s := startService(t, "changes", serviceOptions{})
	s.waitReady()

	cm := createConfigMap(t, ns, "settings", map[string]string{"mode": "on", "flag": "yes"}, map[string]string{"app": "web"}, nil)
	key := s.key(ns, "configmaps", "settings")
	took := eventually(t, 5*time.Second, "create to reach the bucket", func() bool { return s.body(key) != "" })
	t.Logf("create reached the bucket in %s", took)

	var doc map[string]any
	if err := yaml.Unmarshal([]byte(s.body(key)), &doc); err != nil {
		t.Fatal(err)
	}
	u := unstructured.Unstructured{Object: doc}
	if u.GetName() != "settings" || u.GetNamespace() != ns || u.GetUID() != cm.UID || u.GetLabels()["app"] != "web" {
		t.Errorf("stored object: %v", doc)
	}
	if u.GetResourceVersion() != "" || u.GetManagedFields() != nil {
		t.Errorf("stored object keeps resourceVersion or managedFields: %v", doc)
	}
	if !strings.Contains(s.body(key), `flag: "yes"`) {
		t.Errorf("string \"yes\" lost its quotes:\n%s", s.body(key))
	}
	info := s.stored()[key]
	meta := object.MetaFromMap(info.UserMetadata)
	if meta.UID != string(cm.UID) || meta.APIVersion != "v1" || meta.ResourceVersion != cm.ResourceVersion || meta.SHA256 != object.Digest([]byte(s.body(key))) {
		t.Errorf("user metadata %+v for uid %s rv %s", meta, cm.UID, cm.ResourceVersion)
	}

	cm.Data["mode"] = "off"
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, 5*time.Second, "update to reach the bucket", func() bool { return strings.Contains(s.body(key), "mode: \"off\"") })
	t.Logf("update reached the bucket in %s", took)

	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, 5*time.Second, "delete to reach the bucket", func() bool { _, ok := s.stored()[key]; return !ok })
	t.Logf("delete reached the bucket in %s", took)

	// Cluster-scoped objects live under _cluster with plural.group.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "e2e-reader"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}
	if _, err := e2e.cs.RbacV1().ClusterRoles().Create(bg, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	roleKey := s.key("", "clusterroles.rbac.authorization.k8s.io", "e2e-reader")
	eventually(t, 5*time.Second, "cluster-scoped create", func() bool { return s.body(roleKey) != "" })
	if got := object.MetaFromMap(s.stored()[roleKey].UserMetadata).APIVersion; got != "rbac.authorization.k8s.io/v1" {
		t.Errorf("api-version %q", got)
	}
	if err := e2e.cs.RbacV1().ClusterRoles().Delete(bg, "e2e-reader", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "cluster-scoped delete", func() bool { _, ok := s.stored()[roleKey]; return !ok })

	if s.metric("rest_client_requests_total", nil) == 0 || s.metric("workqueue_adds_total", map[string]string{"name": "writer"}) == 0 {
		t.Error("client-go request or workqueue metrics not exported")
	}
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(resp.Body).Lint()
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// The namespace itself, and nothing of the default-excluded types.
	if s.body(s.key("", "namespaces", ns)) == "" {
		t.Error("namespace object not stored")
	}
	for k := range s.stored() {
		for _, excluded := range []string{"/events/", "/events.events.k8s.io/", "/leases.coordination.k8s.io/", "/endpoints/", "/endpointslices.discovery.k8s.io/"} {
			if strings.Contains(k, excluded) {
				t.Errorf("default-excluded type stored: %s", k)
			}
		}
	}
}

var widgetCRD = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func crd(group, plural, kind string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": plural + "." + group},
		"spec": map[string]any{
			"group": group,
			"names": map[string]any{"plural": plural, "singular": strings.ToLower(kind), "kind": kind},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
}

func installCRD(t *testing.T, group, plural, kind string) schema.GroupVersionResource {
	t.Helper()
	if _, err := e2e.dyn.Resource(widgetCRD).Create(bg, crd(group, plural, kind), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: plural}
	eventually(t, 30*time.Second, "CRD established", func() bool {
		_, err := e2e.dyn.Resource(gvr).Namespace("default").List(bg, metav1.ListOptions{})
		return err == nil
	})
	return gvr
}

func createCustom(t *testing.T, gvr schema.GroupVersionResource, kind, ns, name string) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"size": int64(3)},
	}}
	if _, err := e2e.dyn.Resource(gvr).Namespace(ns).Create(bg, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewCRDIsPickedUp(t *testing.T) {
	requireServers(t)
	ns := "e2e-crd"
	createNamespace(t, ns)
	s := startService(t, "crd", serviceOptions{})
	s.waitReady()
	before := s.metric("cluster_backup_watched_resources", nil)

	start := time.Now()
	gvr := installCRD(t, "example.com", "widgets", "Widget")
	createCustom(t, gvr, "Widget", ns, "w1")
	key := s.key(ns, "widgets.example.com", "w1")
	eventually(t, 60*time.Second, "custom resource in the bucket", func() bool { return s.body(key) != "" })
	t.Logf("new CRD and its object backed up %s after the CRD was created", time.Since(start).Round(time.Millisecond))
	if got := s.metric("cluster_backup_watched_resources", nil); got != before+1 {
		t.Errorf("watched resources %v, want %v", got, before+1)
	}

	if err := e2e.dyn.Resource(widgetCRD).Delete(bg, "widgets.example.com", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "informer stopped after CRD deletion", func() bool {
		return s.metric("cluster_backup_watched_resources", nil) == before
	})
}

func TestFilteringModes(t *testing.T) {
	requireServers(t)
	for _, ns := range []string{"e2e-f1", "e2e-f1-skip"} {
		createNamespace(t, ns)
	}
	createConfigMap(t, "e2e-f1", "kept", map[string]string{"a": "b"}, nil, nil)
	createConfigMap(t, "e2e-f1-skip", "in-excluded-ns", map[string]string{"a": "b"}, nil, nil)
	createConfigMap(t, "e2e-f1", "opted-out", map[string]string{"a": "b"}, nil, map[string]string{"backup.io/skip": "true"})
	createConfigMap(t, "e2e-f1", "too-big", map[string]string{"blob": strings.Repeat("x", 4096)}, nil, nil)
	createConfigMap(t, "e2e-f1", "labelled", map[string]string{"a": "b"}, map[string]string{"tier": "keep"}, nil)
	if _, err := e2e.cs.CoreV1().Services("e2e-f1").Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "svc"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("whitelist with namespace, annotation and size filters", func(t *testing.T) {
		s := startService(t, "f-whitelist", serviceOptions{configMap: map[string]string{
			"filtering-mode":      "whitelist",
			"include-resources":   "cm\nnamespaces\n",
			"exclude-namespaces":  "e2e-f1-skip\n",
			"annotation-selector": "backup.io/skip!=true",
			"max-resource-size":   "2Ki",
		}})
		s.waitReady()
		s.waitPass(1)
		got := s.stored()
		for _, k := range []string{s.key("e2e-f1", "configmaps", "kept"), s.key("", "namespaces", "e2e-f1"), s.key("e2e-f1", "configmaps", "labelled")} {
			if _, ok := got[k]; !ok {
				t.Errorf("missing %s", k)
			}
		}
		for _, k := range []string{
			s.key("e2e-f1-skip", "configmaps", "in-excluded-ns"),
			s.key("", "namespaces", "e2e-f1-skip"),
			s.key("e2e-f1", "configmaps", "opted-out"),
			s.key("e2e-f1", "configmaps", "too-big"),
			s.key("e2e-f1", "services", "svc"),
		} {
			if _, ok := got[k]; ok {
				t.Errorf("stored %s, which the filters exclude", k)
			}
		}
		if s.metric("cluster_backup_resources_total", map[string]string{"resource": "configmaps", "action": "skipped"}) < 1 {
			t.Error("oversized object not counted as skipped")
		}
		reasons := map[string]bool{}
		for _, l := range s.logs("resource_filter") {
			if d, ok := l["data"].(map[string]any); ok {
				reasons[fmt.Sprint(d["reason"])] = true
			}
		}
		for _, want := range []string{"not_in_whitelist", "namespace_excluded", "annotation_selector", "too_large"} {
			if !reasons[want] {
				t.Errorf("no resource_filter line with reason %s (have %v)", want, reasons)
			}
		}
	})

	t.Run("hybrid with label selector and include-namespaces", func(t *testing.T) {
		s := startService(t, "f-hybrid", serviceOptions{configMap: map[string]string{
			"filtering-mode":     "hybrid",
			"include-resources":  "configmaps\nservices\n",
			"exclude-resources":  "services",
			"include-namespaces": "e2e-f1",
			"label-selector":     "tier=keep",
		}})
		s.waitReady()
		s.waitPass(1)
		got := s.stored()
		if len(got) != 1 {
			t.Errorf("want only the labelled ConfigMap, got %v", keys(got))
		}
		if _, ok := got[s.key("e2e-f1", "configmaps", "labelled")]; !ok {
			t.Errorf("labelled ConfigMap missing: %v", keys(got))
		}
	})

	t.Run("blacklist", func(t *testing.T) {
		s := startService(t, "f-blacklist", serviceOptions{configMap: map[string]string{
			"filtering-mode":     "blacklist",
			"exclude-resources":  "configmaps\nsecrets\n",
			"include-namespaces": "e2e-f1",
		}})
		s.waitReady()
		s.waitPass(1)
		got := s.stored()
		if _, ok := got[s.key("e2e-f1", "services", "svc")]; !ok {
			t.Errorf("service missing: %v", keys(got))
		}
		for k := range got {
			if strings.Contains(k, "/configmaps/") {
				t.Errorf("excluded type stored: %s", k)
			}
		}
	})
}

func TestFollowOwnerReferences(t *testing.T) {
	requireServers(t)
	ns := "e2e-owners"
	createNamespace(t, ns)
	s := startService(t, "owners", serviceOptions{configMap: map[string]string{
		"filtering-mode":          "whitelist",
		"include-resources":       "deployments",
		"include-namespaces":      ns,
		"follow-owner-references": "true",
	}})
	s.waitReady()
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
	if _, err := e2e.cs.AppsV1().Deployments(ns).Create(bg, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the Deployment's ReplicaSet and Pod in the bucket", func() bool {
		rs, pods := 0, 0
		for k := range s.stored() {
			rs += strings.Count(k, "/replicasets/")
			pods += strings.Count(k, "/pods/")
		}
		return rs == 1 && pods == 1
	})
	for k := range s.stored() {
		if !strings.Contains(k, "/"+ns+"/") {
			t.Errorf("object outside the included namespace: %s", k)
		}
	}
}

func TestOpenShiftDetection(t *testing.T) {
	requireServers(t)
	ns := "e2e-openshift"
	createNamespace(t, ns)
	routes := installCRD(t, "route.openshift.io", "routes", "Route")
	createCustom(t, routes, "Route", ns, "frontend")
	key := func(s *process) string { return s.key(ns, "routes.route.openshift.io", "frontend") }

	on := startService(t, "openshift-on", serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	on.waitReady()
	on.waitPass(1)
	if on.body(key(on)) == "" {
		t.Error("route not backed up with OpenShift detected")
	}
	detected := false
	for _, l := range on.logs("discovery") {
		if d, ok := l["data"].(map[string]any); ok && d["openshift"] == true {
			detected = true
		}
	}
	if !detected {
		t.Error("no discovery line reporting openshift: true")
	}

	off := startService(t, "openshift-off", serviceOptions{configMap: map[string]string{"include-namespaces": ns, "include-openshift-resources": "false"}})
	off.waitReady()
	off.waitPass(1)
	if len(off.stored()) == 0 {
		t.Fatal("nothing stored")
	}
	if off.body(key(off)) != "" {
		t.Error("route backed up with include-openshift-resources: false")
	}
	disabled := startService(t, "openshift-disabled", serviceOptions{configMap: map[string]string{"include-namespaces": ns, "openshift-mode": "disabled"}})
	disabled.waitReady()
	disabled.waitPass(1)
	if disabled.body(key(disabled)) != "" {
		t.Error("route backed up with openshift-mode: disabled")
	}
}

func TestStatusAndManagedFieldsChangesWriteNothing(t *testing.T) {
	requireServers(t)
	ns := "e2e-status"
	createNamespace(t, ns)
	s := startService(t, "status", serviceOptions{configMap: map[string]string{"include-namespaces": ns, "filtering-mode": "whitelist", "include-resources": "configmaps\nservices"}})
	s.waitReady()
	svc, err := e2e.cs.CoreV1().Services(ns).Create(bg, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := s.key(ns, "services", "lb")
	eventually(t, 5*time.Second, "service stored", func() bool { return s.body(key) != "" })
	eventually(t, 5*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	versions := s.versions(key)
	unchanged := s.metric("cluster_backup_resources_total", map[string]string{"resource": "services", "action": "unchanged"})

	svc.Status.Conditions = []metav1.Condition{{Type: "Probed", Status: "True", Reason: "Test", LastTransitionTime: metav1.Now()}}
	if _, err := e2e.cs.CoreV1().Services(ns).UpdateStatus(bg, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the status change handled as unchanged", func() bool {
		return s.metric("cluster_backup_resources_total", map[string]string{"resource": "services", "action": "unchanged"}) >= unchanged+1
	})
	// A managedFields-only change: the same value applied by another manager.
	patch := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"lb"},"spec":{"ports":[{"port":80}]}}`)
	if _, err := e2e.cs.CoreV1().Services(ns).Patch(bg, "lb", types.ApplyPatchType, patch, metav1.PatchOptions{FieldManager: "second-manager"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both changes handled as unchanged", func() bool {
		return s.metric("cluster_backup_resources_total", map[string]string{"resource": "services", "action": "unchanged"}) >= unchanged+2
	})
	if got := s.versions(key); got != versions {
		t.Errorf("status/managedFields-only changes produced %d PUTs", got-versions)
	}
}

func TestBurstWithinWindow(t *testing.T) {
	requireServers(t)
	ns := "e2e-burst"
	createNamespace(t, ns)
	s := startService(t, "burst", serviceOptions{env: map[string]string{"DEBOUNCE": "1s"}, configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	cm := createConfigMap(t, ns, "hot", map[string]string{"n": "0"}, nil, nil)
	key := s.key(ns, "configmaps", "hot")
	eventually(t, 5*time.Second, "first write", func() bool { return s.body(key) != "" })
	before := s.versions(key)
	for i := 1; i <= 20; i++ {
		cm.Data["n"] = fmt.Sprint(i)
		var err error
		if cm, err = e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the last state", func() bool { return strings.Contains(s.body(key), `"n": "20"`) })
	eventually(t, 5*time.Second, "an empty queue", func() bool { return s.metric("cluster_backup_queue_depth", nil) == 0 })
	if puts := s.versions(key) - before; puts > 2 {
		t.Errorf("20 updates inside the window gave %d PUTs, want <= 2", puts)
	}
}

// TestFirstChangeLandsInsideTheWindow: a change to an object not written
// within the last window is written at once, not a window later; the
// change that follows inside the window is written at the window's end.
func TestFirstChangeLandsInsideTheWindow(t *testing.T) {
	requireServers(t)
	ns := "e2e-leading"
	createNamespace(t, ns)
	const window = 10 * time.Second
	s := startService(t, "leading", serviceOptions{env: map[string]string{"DEBOUNCE": window.String()}, configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	created := time.Now()
	cm := createConfigMap(t, ns, "fresh", map[string]string{"n": "0"}, nil, nil)
	key := s.key(ns, "configmaps", "fresh")
	eventually(t, window/2, "the first change in the store, inside half a window", func() bool { return s.body(key) != "" })
	t.Logf("first change stored %.2fs after its create (DEBOUNCE %s)", time.Since(created).Seconds(), window)
	cm.Data["n"] = "1"
	if _, err := e2e.cs.CoreV1().ConfigMaps(ns).Update(bg, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*window, "the change inside the window, at its end", func() bool { return strings.Contains(s.body(key), `"n": "1"`) })
	if got := s.versions(key); got != 2 {
		t.Errorf("%d versions of a create and an update, want 2", got)
	}
}

func TestForbiddenTypeDoesNotStopTheRest(t *testing.T) {
	requireServers(t)
	ns := "e2e-rbac"
	createNamespace(t, ns)
	createConfigMap(t, ns, "visible", map[string]string{"a": "b"}, nil, nil)
	if _, err := e2e.cs.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hidden"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-no-secrets"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps", "namespaces"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	if _, err := e2e.cs.RbacV1().ClusterRoles().Create(bg, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-no-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "e2e-no-secrets"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "limited", APIGroup: "rbac.authorization.k8s.io"}},
	}
	if _, err := e2e.cs.RbacV1().ClusterRoleBindings().Create(bg, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kubeconfig, err := e2e.kube.AddUser("limited")
	if err != nil {
		t.Fatal(err)
	}
	s := startService(t, "rbac", serviceOptions{
		env:       map[string]string{"KUBECONFIG": kubeconfig},
		configMap: map[string]string{"filtering-mode": "whitelist", "include-resources": "configmaps\nsecrets", "include-namespaces": ns},
	})
	s.waitReady()
	s.waitPass(1)
	if s.body(s.key(ns, "configmaps", "visible")) == "" {
		t.Error("ConfigMap not backed up while Secrets are forbidden")
	}
	lines := s.logs("resource_list")
	if len(lines) != 1 || lines[0]["level"] != "error" || lines[0]["resource"] != "secrets" {
		t.Errorf("want one resource_list error for secrets, got %v", lines)
	}
	if got := s.metric("cluster_backup_errors_total", map[string]string{"operation": "resource_list"}); got != 1 {
		t.Errorf("errors_total{operation=resource_list} = %v", got)
	}
}

func TestStoreOutageLosesNothing(t *testing.T) {
	requireServers(t)
	ns := "e2e-outage"
	createNamespace(t, ns)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	s := startService(t, "outage", serviceOptions{minio: srv, configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)

	srv.Kill()
	outage := time.Now()
	for i := range 10 {
		createConfigMap(t, ns, fmt.Sprintf("during-outage-%d", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	eventually(t, 20*time.Second, "readyz to report the store down", func() bool { return s.get("/readyz") == 503 })
	if s.metric("cluster_backup_store_up", nil) != 0 {
		t.Error("cluster_backup_store_up is not 0 while the store is down")
	}
	for time.Since(outage) < 20*time.Second { // the outage lasts 20 s by design
		if s.get("/healthz") != 200 {
			t.Fatal("process not live during the store outage")
		}
		time.Sleep(time.Second)
	}
	if err := srv.Start(bg); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 90*time.Second, "all 10 changes to land", func() bool {
		n := 0
		for k := range s.stored() {
			n += strings.Count(k, "/during-outage-")
		}
		return n == 10
	})
	t.Logf("10 changes landed %s after the store came back", took.Round(time.Millisecond))
	eventually(t, 30*time.Second, "readyz to recover", func() bool { return s.get("/readyz") == 200 })
}

// TestStoreDownAtStart starts the service while its MinIO is down: it
// stays up, counts minio_connect errors, is live but not ready, and backs
// the cluster up once the store is back, without a restart.
func TestStoreDownAtStart(t *testing.T) {
	requireServers(t)
	ns := "e2e-store-down-at-start"
	createNamespace(t, ns)
	createConfigMap(t, ns, "before", map[string]string{"v": "1"}, nil, nil)
	srv, err := testenvMinIO(t)
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	s := startService(t, "store-down-at-start", serviceOptions{minio: srv, configMap: map[string]string{"include-namespaces": ns}})
	eventually(t, 30*time.Second, "minio_connect errors to be counted", func() bool {
		if s.get("/readyz") == 0 {
			return false // not serving yet
		}
		return s.metric("cluster_backup_errors_total", map[string]string{"operation": "minio_connect"}) >= 2
	})
	if code := s.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while the store was never reached, want 503", code)
	}
	if code := s.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while waiting for the store, want 200", code)
	}
	if s.metric("cluster_backup_store_up", nil) != 0 {
		t.Error("cluster_backup_store_up is not 0 before the store was reached")
	}
	createConfigMap(t, ns, "while-down", map[string]string{"v": "1"}, nil, nil)
	if err := srv.Start(bg); err != nil {
		t.Fatal(err)
	}
	s.waitReady()
	s.waitPass(1)
	for _, name := range []string{"before", "while-down"} {
		if s.body(s.key(ns, "configmaps", name)) == "" {
			t.Errorf("%s/%s not backed up once the store came back", ns, name)
		}
	}
	if s.metric("cluster_backup_store_up", nil) != 1 {
		t.Error("cluster_backup_store_up is not 1 once connected")
	}
	select {
	case <-s.done:
		t.Fatalf("the service exited: %v", s.exitErr)
	default:
	}
}

func TestRestartOverUnchangedClusterWritesNothing(t *testing.T) {
	requireServers(t)
	ns := "e2e-restart"
	createNamespace(t, ns)
	for i := range 20 {
		createConfigMap(t, ns, fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}, nil, nil)
	}
	// Scoped to its namespace: other tests' namespaces may still be
	// terminating, and their deletions are changes this test must not see.
	opts := serviceOptions{configMap: map[string]string{"include-namespaces": ns}}
	first := startService(t, "restart", opts)
	first.waitReady()
	first.waitPass(1)
	eventually(t, 10*time.Second, "an empty queue", func() bool { return first.metric("cluster_backup_queue_depth", nil) == 0 })
	// Secrets are backed up, unencrypted: said at start, and exported.
	if first.metric("cluster_backup_secrets_encrypted", nil) != 0 || !hasMessage(first.logs(""), "Secrets are stored in the clear") {
		t.Error("Secrets stored in the clear without a warning, or cluster_backup_secrets_encrypted is not 0")
	}
	first.stop()
	before := map[string]int{}
	for k := range first.stored() {
		before[k] = first.versions(k)
	}
	if len(before) < 20 {
		t.Fatalf("only %d objects stored", len(before))
	}

	second := startService(t, "restart", opts)
	second.waitReady()
	pass := second.waitPass(1)
	eventually(t, 10*time.Second, "an empty queue", func() bool { return second.metric("cluster_backup_queue_depth", nil) == 0 })
	if w := second.metric("cluster_backup_resources_total", map[string]string{"action": "written"}); w != 0 {
		t.Errorf("restart over an unchanged cluster wrote %v objects", w)
	}
	if d, _ := pass["data"].(map[string]any); d["backed_up"] != 0.0 || d["deleted"] != 0.0 {
		t.Errorf("first pass after restart: %v", d)
	}
	for k, n := range before {
		if got := second.versions(k); got != n {
			t.Errorf("%s: %d versions after restart, was %d", k, got, n)
		}
	}
}

// hasMessage reports whether a log line starts with msg.
func hasMessage(lines []map[string]any, msg string) bool {
	for _, l := range lines {
		if m, _ := l["message"].(string); strings.HasPrefix(m, msg) {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDirectoryStore(t *testing.T) {
	requireServers(t)
	ns := "e2e-dir"
	createNamespace(t, ns)
	createConfigMap(t, ns, "on-disk", map[string]string{"a": "b"}, nil, nil)
	dir := t.TempDir()
	s := startService(t, "dir", serviceOptions{
		env:       map[string]string{"MINIO_ENDPOINT": "", "BACKUP_DIR": dir},
		configMap: map[string]string{"include-namespaces": ns},
	})
	s.waitReady()
	s.waitPass(1)
	path := filepath.Join(dir, "clusterbackup", "dir", ns, "configmaps", "on-disk.yaml")
	eventually(t, 5*time.Second, "the file", func() bool { _, err := os.Stat(path); return err == nil })
	if err := e2e.cs.CoreV1().ConfigMaps(ns).Delete(bg, "on-disk", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the file to go", func() bool { _, err := os.Stat(path); return errors.Is(err, os.ErrNotExist) })
}

func TestUnavailableAPIGroupDoesNotStopTheRest(t *testing.T) {
	requireServers(t)
	ns := "e2e-aggregated"
	createNamespace(t, ns)
	apiservice := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": "v1.broken.example.com"},
		"spec": map[string]any{
			"group": "broken.example.com", "version": "v1",
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"name": "nowhere", "namespace": ns, "port": int64(443)},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	if _, err := e2e.dyn.Resource(gvr).Create(bg, apiservice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2e.dyn.Resource(gvr).Delete(bg, "v1.broken.example.com", metav1.DeleteOptions{}) })
	s := startService(t, "aggregated", serviceOptions{configMap: map[string]string{"include-namespaces": ns}})
	s.waitReady()
	s.waitPass(1)
	createConfigMap(t, ns, "still-works", map[string]string{"a": "b"}, nil, nil)
	eventually(t, 5*time.Second, "a change backed up", func() bool { return s.body(s.key(ns, "configmaps", "still-works")) != "" })
	warned := false
	for _, l := range s.logs("discovery") {
		if d, ok := l["data"].(map[string]any); ok && l["level"] == "warn" && d["group"] == "broken.example.com" {
			warned = true
		}
	}
	if !warned {
		t.Error("no discovery warning for the unavailable group")
	}
	if s.metric("cluster_backup_errors_total", map[string]string{"operation": "discovery"}) < 1 {
		t.Error("discovery failure not counted")
	}
}
