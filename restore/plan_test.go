package restore

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cluster-backup/cluster-backup/object"
)

// obj builds an object from apiVersion, kind, namespace/name and optional
// fields merged in at the top level.
func obj(apiVersion, kind, id string, fields map[string]any) *unstructured.Unstructured {
	ns, name, ok := strings.Cut(id, "/")
	if !ok {
		ns, name = "", id
	}
	o := &unstructured.Unstructured{Object: map[string]any{}}
	for k, v := range fields {
		o.Object[k] = v
	}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(ns)
	o.SetName(name)
	return o
}

// pairs is a map of alternating keys and values.
func pairs(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func withLabels(o *unstructured.Unstructured, kv ...string) *unstructured.Unstructured {
	o.SetLabels(pairs(kv...))
	return o
}

func withAnnotations(o *unstructured.Unstructured, kv ...string) *unstructured.Unstructured {
	o.SetAnnotations(pairs(kv...))
	return o
}

func controlledBy(o *unstructured.Unstructured, apiVersion, kind, name string) *unstructured.Unstructured {
	yes := true
	o.Object["metadata"].(map[string]any)["ownerReferences"] = []any{map[string]any{
		"apiVersion": apiVersion, "kind": kind, "name": name, "uid": "old-uid", "controller": yes,
	}}
	return o
}

func TestCheckKey(t *testing.T) {
	key := object.Key{Segment: "configmaps", Namespace: "shop", Name: "settings"}
	cases := []struct {
		name    string
		obj     *unstructured.Unstructured
		key     object.Key
		segment string
		ok      bool
	}{
		{"the object its key names", obj("v1", "ConfigMap", "shop/settings", nil), key, "configmaps", true},
		{"unknown kind, same group", obj("v1", "ConfigMap", "shop/settings", nil), key, "", true},
		{"a ClusterRoleBinding at a ConfigMap's key", obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "settings", nil), key, "clusterrolebindings.rbac.authorization.k8s.io", false},
		{"the same, its namespace forged too", obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "shop/settings", nil), key, "clusterrolebindings.rbac.authorization.k8s.io", false},
		{"the same, the target does not know the kind", obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "shop/settings", nil), key, "", false},
		{"a Secret at a ConfigMap's key", obj("v1", "Secret", "shop/settings", nil), key, "secrets", false},
		{"another namespace", obj("v1", "ConfigMap", "kube-system/settings", nil), key, "configmaps", false},
		{"another name", obj("v1", "ConfigMap", "shop/other", nil), key, "configmaps", false},
		{"cluster-scoped at a namespaced key", obj("v1", "ConfigMap", "settings", nil), key, "configmaps", false},
		{"a Deployment, the target does not know the kind", obj("apps/v1", "Deployment", "shop/web", nil), object.Key{Segment: "deployments", Namespace: "shop", Name: "web"}, "", true},
		{"a Deployment at a ConfigMap's key, the target does not know the kind", obj("apps/v1", "Deployment", "shop/settings", nil), key, "", false},
		{"Endpoints, the target does not know the kind", obj("v1", "Endpoints", "shop/web", nil), object.Key{Segment: "endpoints", Namespace: "shop", Name: "web"}, "", true},
		{"a custom resource of an irregular plural, the target does not know the kind", obj("example.com/v1", "Octopus", "shop/o", nil), object.Key{Segment: "octopi.example.com", Namespace: "shop", Name: "o"}, "", true},
		{"a custom resource at a ConfigMap's key, the target does not know the kind", obj("example.com/v1", "Widget", "shop/settings", nil), key, "", false},
		{"a custom resource", obj("example.com/v1", "Widget", "shop/w1", nil), object.Key{Segment: "widgets.example.com", Namespace: "shop", Name: "w1"}, "widgets.example.com", true},
		{"a custom resource of another group", obj("evil.io/v1", "Widget", "shop/w1", nil), object.Key{Segment: "widgets.example.com", Namespace: "shop", Name: "w1"}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckKey(c.obj, c.key, c.segment)
			if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrMisfiled)) {
				t.Errorf("CheckKey: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestDecideRefusesAMisfiledDocument(t *testing.T) {
	r := newRestorer(Target{}, Options{})
	body := []byte("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: settings\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: Group\n  name: system:authenticated\n")
	f := Fetched{Item: Item{Key: object.Key{Segment: "configmaps", Namespace: "shop", Name: "settings"}}, Body: body}
	if p := r.decide(f, func(ownerKey) bool { return false }); p != nil {
		t.Fatalf("a ClusterRoleBinding stored at a ConfigMap's key was planned: %v", p.obj)
	}
	if len(r.results) != 1 || r.results[0].Outcome != Failed || r.results[0].Resource != "configmaps" || !strings.Contains(r.results[0].Reason, "ClusterRoleBinding") {
		t.Fatalf("results %+v, want one failed result that names the ConfigMap's key and what it held", r.results)
	}
}

func TestDecideRefusesEncryptedValuesOutsideSecrets(t *testing.T) {
	r := newRestorer(Target{}, Options{})
	body := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loot\n  namespace: shop\n  annotations:\n    cluster-backup.io/encryption: 'age/v1+bound: copied'\ndata:\n  password: YWdlLWVuY3J5cHRpb24=\n")
	f := Fetched{Item: Item{Key: object.Key{Segment: "configmaps", Namespace: "shop", Name: "loot"}}, Body: body}
	if p := r.decide(f, func(ownerKey) bool { return false }); p != nil {
		t.Fatal("a ConfigMap with encrypted values was planned")
	}
	if len(r.results) != 1 || r.results[0].Outcome != Failed || !strings.Contains(r.results[0].Reason, "only Secrets") {
		t.Fatalf("results %+v", r.results)
	}
}

func TestSelectedTakesTheNamespacesOfTheSelection(t *testing.T) {
	sel := labels.SelectorFromSet(labels.Set{"app": "web"})
	in := map[string]bool{"shop": true}
	cases := []struct {
		name string
		obj  *unstructured.Unstructured
		want bool
	}{
		{"matching object", withLabels(obj("v1", "ConfigMap", "shop/a", nil), "app", "web"), true},
		{"other label", withLabels(obj("v1", "ConfigMap", "shop/b", nil), "app", "api"), false},
		{"its Namespace, unlabelled", obj("v1", "Namespace", "shop", nil), true},
		{"another Namespace", obj("v1", "Namespace", "other", nil), false},
	}
	for _, c := range cases {
		if got := Selected(c.obj, sel, in); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if !Selected(obj("v1", "ConfigMap", "shop/x", nil), nil, nil) {
		t.Error("no selector takes everything")
	}
}

func TestPruneReason(t *testing.T) {
	sel := labels.SelectorFromSet(labels.Set{"app": "web"})
	storedAll := func(*unstructured.Unstructured) bool { return true }
	storedNone := func(*unstructured.Unstructured) bool { return false }
	web := func() *unstructured.Unstructured {
		return withLabels(obj("apps/v1", "Deployment", "shop/web2", nil), "app", "web")
	}
	cases := []struct {
		name     string
		live     *unstructured.Unstructured
		selector labels.Selector
		stored   func(*unstructured.Unstructured) bool
		prune    bool
	}{
		{"in the selection and stored by the rules", web(), sel, storedAll, true},
		{"outside -l", withLabels(obj("apps/v1", "Deployment", "shop/api", nil), "app", "api"), sel, storedAll, false},
		{"the rules would not have stored it", web(), sel, storedNone, false},
		{"no selector", withLabels(obj("apps/v1", "Deployment", "shop/api", nil), "app", "api"), nil, storedAll, true},
		{"owned", controlledBy(web(), "apps/v1", "Deployment", "x"), nil, nil, false},
		{"the namespace's default ServiceAccount", obj("v1", "ServiceAccount", "shop/default", nil), nil, nil, false},
		{"what the control plane publishes", obj("v1", "ConfigMap", "shop/kube-root-ca.crt", nil), nil, nil, false},
		{"in kube-system", obj("apps/v1", "Deployment", "kube-system/coredns", nil), nil, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason := PruneReason(c.live, c.selector, c.stored)
			if c.prune != (reason != "") {
				t.Fatalf("PruneReason %q, want prune=%v", reason, c.prune)
			}
			if c.prune && c.selector != nil && !strings.Contains(reason, "-l app=web") {
				t.Errorf("reason %q does not say which selection it matched", reason)
			}
		})
	}
}

func TestSkipReason(t *testing.T) {
	restored := func(ownerKey) bool { return true }
	none := func(ownerKey) bool { return false }
	cases := []struct {
		name     string
		obj      *unstructured.Unstructured
		restored func(ownerKey) bool
		include  bool
		skip     bool
	}{
		{"a ReplicaSet of a restored Deployment", controlledBy(obj("apps/v1", "ReplicaSet", "shop/web-1", nil), "apps/v1", "Deployment", "web"), restored, false, true},
		{"a ReplicaSet whose Deployment is not restored", controlledBy(obj("apps/v1", "ReplicaSet", "shop/web-1", nil), "apps/v1", "Deployment", "web"), none, false, false},
		{"a Pod of a restored StatefulSet", controlledBy(obj("v1", "Pod", "shop/db-0", nil), "apps/v1", "StatefulSet", "db"), restored, false, true},
		{"a Job of a restored CronJob", controlledBy(obj("batch/v1", "Job", "shop/nightly-1", nil), "batch/v1", "CronJob", "nightly"), restored, false, true},
		{"a ConfigMap a Deployment controls", controlledBy(obj("v1", "ConfigMap", "shop/web-config", nil), "apps/v1", "Deployment", "web"), restored, false, false},
		{"a Secret a Deployment controls", controlledBy(obj("v1", "Secret", "shop/web-creds", nil), "apps/v1", "Deployment", "web"), restored, false, false},
		{"a StatefulSet's claim under WhenDeleted: Delete", controlledBy(obj("v1", "PersistentVolumeClaim", "shop/data-db-0", nil), "apps/v1", "StatefulSet", "db"), restored, false, false},
		{"a Pod a custom resource controls", controlledBy(obj("v1", "Pod", "shop/p", nil), "example.com/v1", "Cluster", "c"), restored, false, false},
		{"a Node", obj("v1", "Node", "worker-1", nil), none, false, true},
		{"a Node, --include-control-plane", obj("v1", "Node", "worker-1", nil), none, true, true},
		{"an IPAddress", withLabels(obj("networking.k8s.io/v1", "IPAddress", "10.96.0.10", nil), "ipaddress.kubernetes.io/managed-by", "ipallocator.k8s.io"), none, false, true},
		{"an IPAddress, --include-control-plane", withLabels(obj("networking.k8s.io/v1", "IPAddress", "10.96.0.10", nil), "ipaddress.kubernetes.io/managed-by", "ipallocator.k8s.io"), none, true, false},
		{"kube-system, absent only", obj("v1", "Namespace", "kube-system", nil), none, false, false},
		{"a user ClusterRole", obj("rbac.authorization.k8s.io/v1", "ClusterRole", "shop-reader", nil), none, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason := SkipReason(c.obj, c.restored, c.include)
			if c.skip != (reason != "") {
				t.Errorf("SkipReason %q, want skip=%v", reason, c.skip)
			}
		})
	}
}

// TestControlPlaneRules checks every rule against an object of the kind
// its Example names, and one that differs only in what the rule looks at.
func TestControlPlaneRules(t *testing.T) {
	cases := []struct {
		match, miss *unstructured.Unstructured
		absentOnly  bool
	}{
		{obj("v1", "Node", "worker-1", nil), obj("v1", "Namespace", "worker-1", nil), false},
		{obj("coordination.k8s.io/v1", "Lease", "kube-node-lease/worker-1", nil), obj("v1", "ConfigMap", "shop/worker-1", nil), false},
		{withAnnotations(obj("v1", "Pod", "kube-system/etcd-node-1", nil), "kubernetes.io/config.mirror", "x"), obj("v1", "Pod", "shop/etcd-node-1", nil), false},
		{obj("v1", "Secret", "shop/robot-token", map[string]any{"type": "kubernetes.io/service-account-token"}), obj("v1", "Secret", "shop/robot-token", map[string]any{"type": "Opaque"}), false},
		{obj("v1", "Secret", "shop/bootstrap-token-abcdef", map[string]any{"type": "bootstrap.kubernetes.io/token"}), obj("v1", "Secret", "shop/bootstrap-token-abcdef", nil), false},
		{obj("v1", "ConfigMap", "shop/kube-root-ca.crt", nil), obj("v1", "ConfigMap", "shop/root-ca", nil), false},
		{obj("v1", "ConfigMap", "kube-system/extension-apiserver-authentication", nil), nil, false},
		{obj("v1", "ConfigMap", "kube-public/cluster-info", nil), nil, false},
		{obj("v1", "Secret", "kube-system/kubeadm-certs", nil), nil, false},
		{obj("v1", "Endpoints", "default/kubernetes", nil), obj("v1", "Endpoints", "default/kubernetes-dashboard", nil), false},
		{obj("discovery.k8s.io/v1", "EndpointSlice", "default/kubernetes", nil), nil, false},
		{withLabels(obj("discovery.k8s.io/v1", "EndpointSlice", "shop/web-x7k2p", nil), "endpointslice.kubernetes.io/managed-by", "endpointslice-controller.k8s.io"), obj("discovery.k8s.io/v1", "EndpointSlice", "shop/web-x7k2p", nil), false},
		{withLabels(obj("apiregistration.k8s.io/v1", "APIService", "v1.apps", nil), "kube-aggregator.kubernetes.io/automanaged", "onstart"), obj("apiregistration.k8s.io/v1", "APIService", "v1.metrics.example.com", nil), false},
		{obj("certificates.k8s.io/v1beta1", "ClusterTrustBundle", "kubernetes.io:kube-apiserver-serving:abc", map[string]any{"spec": map[string]any{"signerName": "kubernetes.io/kube-apiserver-serving"}}),
			obj("certificates.k8s.io/v1beta1", "ClusterTrustBundle", "example.com:mine:abc", map[string]any{"spec": map[string]any{"signerName": "example.com/mine"}}), false},
		{obj("certificates.k8s.io/v1", "CertificateSigningRequest", "csr-8x2lq", nil), nil, false},
		{withLabels(obj("networking.k8s.io/v1", "IPAddress", "10.96.0.10", nil), "ipaddress.kubernetes.io/managed-by", "ipallocator.k8s.io"), obj("networking.k8s.io/v1", "IPAddress", "10.96.0.11", nil), false},
		{obj("networking.k8s.io/v1", "ServiceCIDR", "kubernetes", nil), obj("networking.k8s.io/v1", "ServiceCIDR", "extra", nil), false},
		{withAnnotations(obj("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "system-leader-election", nil), "apf.kubernetes.io/autoupdate-spec", "true"),
			withAnnotations(obj("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "system-leader-election", nil), "apf.kubernetes.io/autoupdate-spec", "false"), false},
		{obj("flowcontrol.apiserver.k8s.io/v1", "PriorityLevelConfiguration", "catch-all", nil), nil, false},
		{withAnnotations(obj("rbac.authorization.k8s.io/v1", "ClusterRole", "system:controller:job-controller", nil), "rbac.authorization.kubernetes.io/autoupdate", "true"),
			withAnnotations(obj("rbac.authorization.k8s.io/v1", "ClusterRole", "system:controller:job-controller", nil), "rbac.authorization.kubernetes.io/autoupdate", "false"), false},
		{obj("scheduling.k8s.io/v1", "PriorityClass", "system-node-critical", nil), obj("scheduling.k8s.io/v1", "PriorityClass", "high", nil), false},
		{obj("v1", "Namespace", "kube-system", nil), obj("v1", "Namespace", "shop", nil), true},
		{obj("apps/v1", "Deployment", "kube-system/coredns", nil), obj("apps/v1", "Deployment", "default/coredns", nil), true},
		{obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "kubeadm:kubelet-bootstrap", nil), nil, true},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		rule, ok := controlPlaneRule(c.match)
		if !ok {
			t.Errorf("%s %s/%s matches no rule", c.match.GetKind(), c.match.GetNamespace(), c.match.GetName())
			continue
		}
		seen[rule.Match] = true
		if rule.AbsentOnly != c.absentOnly {
			t.Errorf("%s: AbsentOnly %v", rule.Match, rule.AbsentOnly)
		}
		if c.miss != nil {
			if r, ok := controlPlaneRule(c.miss); ok {
				t.Errorf("%s %s/%s matches %q", c.miss.GetKind(), c.miss.GetNamespace(), c.miss.GetName(), r.Match)
			}
		}
	}
	for _, r := range ControlPlaneRules {
		if !seen[r.Match] {
			t.Errorf("rule %q has no case", r.Match)
		}
		if r.Reason == "" || r.Example == "" {
			t.Errorf("rule %q lacks a reason or an example", r.Match)
		}
	}
}

func TestMapNamespaces(t *testing.T) {
	mapping := map[string]string{"staging": "prod"}
	binding := obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "staging-readers", map[string]any{
		"subjects": []any{
			map[string]any{"kind": "ServiceAccount", "name": "robot", "namespace": "staging"},
			map[string]any{"kind": "Group", "name": "system:serviceaccounts:staging"},
			map[string]any{"kind": "Group", "name": "system:serviceaccounts:staging-2"},
			map[string]any{"kind": "Group", "name": "system:serviceaccounts"},
			map[string]any{"kind": "User", "name": "system:serviceaccount:staging:robot"},
			map[string]any{"kind": "User", "name": "alice"},
		},
	})
	MapNamespaces(binding, mapping)
	subjects := binding.Object["subjects"].([]any)
	want := []string{"robot@prod", "system:serviceaccounts:prod", "system:serviceaccounts:staging-2", "system:serviceaccounts", "system:serviceaccount:prod:robot", "alice"}
	for i, s := range subjects {
		m := s.(map[string]any)
		got := m["name"].(string)
		if ns, ok := m["namespace"].(string); ok {
			got += "@" + ns
		}
		if got != want[i] {
			t.Errorf("subject %d: %s, want %s", i, got, want[i])
		}
	}

	policy := obj("networking.k8s.io/v1", "NetworkPolicy", "staging/from-staging", map[string]any{"spec": map[string]any{
		"ingress": []any{map[string]any{"from": []any{
			map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "staging"}}},
			map[string]any{"namespaceSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/metadata.name", "operator": "In", "values": []any{"staging", "monitoring"}}}}},
			map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": "staging"}}},
		}}},
		"egress": []any{map[string]any{"to": []any{
			map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "staging"}}},
		}}},
	}})
	MapNamespaces(policy, mapping)
	if policy.GetNamespace() != "prod" {
		t.Errorf("namespace %q", policy.GetNamespace())
	}
	from := policy.Object["spec"].(map[string]any)["ingress"].([]any)[0].(map[string]any)["from"].([]any)
	if v := from[0].(map[string]any)["namespaceSelector"].(map[string]any)["matchLabels"].(map[string]any)["kubernetes.io/metadata.name"]; v != "prod" {
		t.Errorf("ingress matchLabels: %v", v)
	}
	values := from[1].(map[string]any)["namespaceSelector"].(map[string]any)["matchExpressions"].([]any)[0].(map[string]any)["values"].([]any)
	if values[0] != "prod" || values[1] != "monitoring" {
		t.Errorf("ingress matchExpressions: %v", values)
	}
	if v := from[2].(map[string]any)["namespaceSelector"].(map[string]any)["matchLabels"].(map[string]any)["team"]; v != "staging" {
		t.Errorf("a label other than the namespace's name was rewritten: %v", v)
	}
	to := policy.Object["spec"].(map[string]any)["egress"].([]any)[0].(map[string]any)["to"].([]any)
	if v := to[0].(map[string]any)["namespaceSelector"].(map[string]any)["matchLabels"].(map[string]any)["kubernetes.io/metadata.name"]; v != "prod" {
		t.Errorf("egress matchLabels: %v", v)
	}

	pv := obj("v1", "PersistentVolume", "pv-1", map[string]any{"spec": map[string]any{"claimRef": map[string]any{"namespace": "staging", "name": "data"}}})
	MapNamespaces(pv, mapping)
	if ns, _, _ := unstructured.NestedString(pv.Object, "spec", "claimRef", "namespace"); ns != "prod" {
		t.Errorf("claimRef namespace %q", ns)
	}
	ns := withLabels(obj("v1", "Namespace", "staging", nil), "kubernetes.io/metadata.name", "staging")
	MapNamespaces(ns, mapping)
	if ns.GetName() != "prod" || ns.GetLabels()["kubernetes.io/metadata.name"] != "prod" {
		t.Errorf("Namespace %s %v", ns.GetName(), ns.GetLabels())
	}
}

func TestReclaimed(t *testing.T) {
	pv := func(policy string) *unstructured.Unstructured {
		return obj("v1", "PersistentVolume", "pv-1", map[string]any{"spec": map[string]any{"persistentVolumeReclaimPolicy": policy}})
	}
	cases := []struct {
		name              string
		obj               *unstructured.Unstructured
		writtenBy, target string
		keep              bool
		want              string
	}{
		{"another cluster wrote it", pv("Delete"), "old", "new", false, "Retain"},
		{"--keep-reclaim-policy", pv("Delete"), "old", "new", true, "Delete"},
		{"this cluster wrote it", pv("Delete"), "same", "same", false, "Delete"},
		{"no writer recorded", pv("Delete"), "", "new", false, "Retain"},
		{"already Retain", pv("Retain"), "old", "new", false, "Retain"},
	}
	for _, c := range cases {
		note := Reclaimed(c.obj, c.writtenBy, c.target, c.keep)
		got, _, _ := unstructured.NestedString(c.obj.Object, "spec", "persistentVolumeReclaimPolicy")
		if got != c.want || (note != "") != (c.want == "Retain" && c.name != "already Retain") {
			t.Errorf("%s: %s (%q), want %s", c.name, got, note, c.want)
		}
	}
}

func TestKeepAllocatedKeepsTheVolumesBinding(t *testing.T) {
	live := obj("v1", "PersistentVolume", "pv-1", map[string]any{"spec": map[string]any{"claimRef": map[string]any{
		"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "live-uid", "resourceVersion": "42",
	}}})
	backup := obj("v1", "PersistentVolume", "pv-1", map[string]any{"spec": map[string]any{"claimRef": map[string]any{
		"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data", "uid": "old-uid",
	}}})
	Sanitize(backup, false)
	if uid, found, _ := unstructured.NestedString(backup.Object, "spec", "claimRef", "uid"); found {
		t.Fatalf("sanitised claimRef keeps uid %q", uid)
	}
	keepAllocated(backup, live)
	if uid, _, _ := unstructured.NestedString(backup.Object, "spec", "claimRef", "uid"); uid != "live-uid" {
		t.Errorf("claimRef uid %q, want the live binding's", uid)
	}
}

func TestOwnersWave(t *testing.T) {
	keys := map[string]bool{"deployments/shop/web": true, "widgets.example.com/shop/w": true}
	cases := []struct {
		name string
		obj  *unstructured.Unstructured
		want Wave
	}{
		{"owned by a restored Deployment", controlledBy(obj("v1", "ConfigMap", "shop/c", nil), "apps/v1", "Deployment", "web"), WaveWorkloads},
		{"owned by a restored custom resource", controlledBy(obj("v1", "Secret", "shop/s", nil), "example.com/v1", "Widget", "w"), WaveRest},
		{"owner not restored", controlledBy(obj("v1", "ConfigMap", "shop/c", nil), "apps/v1", "Deployment", "other"), 0},
	}
	for _, c := range cases {
		if got := newRestorer(Target{}, Options{}).ownersWave(c.obj, keys); got != c.want {
			t.Errorf("%s: wave %d, want %d", c.name, got, c.want)
		}
	}
}

func TestDiffMasksTheLastAppliedCopyOfASecret(t *testing.T) {
	secret := func(password string) *unstructured.Unstructured {
		o := obj("v1", "Secret", "shop/db", map[string]any{"data": map[string]any{"password": password}})
		return withAnnotations(o, "kubectl.kubernetes.io/last-applied-configuration", `{"data":{"password":"`+password+`"}}`, "team", "shop")
	}
	d := difference(Changed, Result{Resource: "secrets", Namespace: "shop", Name: "db"}, secret("bGl2ZQ=="), secret("YmFja3Vw"), false)
	details := d.Details()
	for _, leak := range []string{"bGl2ZQ==", "YmFja3Vw"} {
		if strings.Contains(details, leak) {
			t.Errorf("the diff shows a Secret value %q:\n%s", leak, details)
		}
	}
	if !strings.Contains(details, "*** (before)") || !strings.Contains(details, "team: shop") {
		t.Errorf("the diff does not show that the values changed, or hides other annotations:\n%s", details)
	}
	same := difference(Changed, Result{Resource: "secrets"}, secret("c2FtZQ=="), secret("c2FtZQ=="), false)
	if strings.Contains(same.Before+same.After, "c2FtZQ==") {
		t.Errorf("equal values shown:\n%s", same.Details())
	}
}

func TestPrioritiesAddToTheDefaultOrder(t *testing.T) {
	configuration, err := ParseWave("configuration")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseWave("early"); err == nil || !strings.Contains(err.Error(), `"early"`) {
		t.Errorf("an unknown wave: %v", err)
	}
	r := newRestorer(Target{}, Options{Waves: map[string]Wave{"issuers.cert-manager.io": configuration}})
	for seg, want := range map[string]Wave{
		"issuers.cert-manager.io":                        WaveConfiguration,
		"certificates.cert-manager.io":                   WaveRest, // not listed: the default
		"deployments":                                    WaveWorkloads,
		"customresourcedefinitions.apiextensions.k8s.io": WaveCRDs,
	} {
		if got := r.waveOf(seg); got != want {
			t.Errorf("%s: wave %d, want %d", seg, got, want)
		}
	}
	// A dependent follows its owner's wave as the rules place it.
	owned := controlledBy(obj("v1", "ConfigMap", "shop/c", nil), "cert-manager.io/v1", "Issuer", "ca")
	if got := r.ownersWave(owned, map[string]bool{"issuers.cert-manager.io/shop/ca": true}); got != WaveConfiguration {
		t.Errorf("owner's wave %d", got)
	}
}

func TestSanitize(t *testing.T) {
	cases := []struct {
		name              string
		obj               *unstructured.Unstructured
		preserveNodePorts bool
		gone, kept        [][]string
	}{
		{"what the API server assigns", obj("v1", "ConfigMap", "shop/c", map[string]any{
			"metadata": map[string]any{"name": "c", "namespace": "shop", "uid": "u", "resourceVersion": "1", "generation": int64(2),
				"creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": []any{}, "generateName": "c-"},
			"status": map[string]any{"x": "y"}, "data": map[string]any{"k": "v"},
		}), false,
			[][]string{{"metadata", "uid"}, {"metadata", "resourceVersion"}, {"metadata", "generation"}, {"metadata", "creationTimestamp"}, {"metadata", "managedFields"}, {"metadata", "generateName"}, {"status"}},
			[][]string{{"data", "k"}}},
		{"a Service's allocations", obj("v1", "Service", "shop/web", map[string]any{"spec": map[string]any{
			"clusterIP": "10.0.0.1", "clusterIPs": []any{"10.0.0.1"}, "healthCheckNodePort": int64(30000),
			"ports": []any{map[string]any{"port": int64(80), "nodePort": int64(31000)}},
		}}), false,
			[][]string{{"spec", "clusterIP"}, {"spec", "clusterIPs"}, {"spec", "healthCheckNodePort"}}, nil},
		{"a headless Service keeps None", obj("v1", "Service", "shop/db", map[string]any{"spec": map[string]any{"clusterIP": "None"}}), false,
			nil, [][]string{{"spec", "clusterIP"}}},
		{"node ports kept on request", obj("v1", "Service", "shop/web", map[string]any{"spec": map[string]any{"healthCheckNodePort": int64(30000)}}), true,
			nil, [][]string{{"spec", "healthCheckNodePort"}}},
		{"a Pod's node", obj("v1", "Pod", "shop/p", map[string]any{"spec": map[string]any{"nodeName": "n1"}}), false,
			[][]string{{"spec", "nodeName"}}, nil},
		{"a claim's binding", obj("v1", "PersistentVolumeClaim", "shop/data", map[string]any{"spec": map[string]any{"volumeName": "pv-1", "storageClassName": "fast"}}), false,
			[][]string{{"spec", "volumeName"}}, [][]string{{"spec", "storageClassName"}}},
		{"a volume's claim uid", obj("v1", "PersistentVolume", "pv-1", map[string]any{"spec": map[string]any{"claimRef": map[string]any{"name": "data", "namespace": "shop", "uid": "u", "resourceVersion": "9"}}}), false,
			[][]string{{"spec", "claimRef", "uid"}, {"spec", "claimRef", "resourceVersion"}}, [][]string{{"spec", "claimRef", "name"}}},
		{"a Job's controller-uid", obj("batch/v1", "Job", "shop/j", map[string]any{"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"batch.kubernetes.io/controller-uid": "u"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"batch.kubernetes.io/controller-uid": "u", "app": "j"}}},
		}}), false,
			[][]string{{"spec", "selector"}, {"spec", "template", "metadata", "labels", "batch.kubernetes.io/controller-uid"}}, [][]string{{"spec", "template", "metadata", "labels", "app"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			Sanitize(c.obj, c.preserveNodePorts)
			for _, path := range c.gone {
				if _, found, _ := unstructured.NestedFieldNoCopy(c.obj.Object, path...); found {
					t.Errorf("%v kept", path)
				}
			}
			for _, path := range c.kept {
				if _, found, _ := unstructured.NestedFieldNoCopy(c.obj.Object, path...); !found {
					t.Errorf("%v dropped", path)
				}
			}
		})
	}
}
