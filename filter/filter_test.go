package filter

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

var cluster = []Resource{
	{Version: "v1", Resource: "configmaps", Singular: "configmap", Kind: "ConfigMap", ShortNames: []string{"cm"}, Namespaced: true},
	{Version: "v1", Resource: "secrets", Singular: "secret", Kind: "Secret", Namespaced: true},
	{Version: "v1", Resource: "services", Singular: "service", Kind: "Service", ShortNames: []string{"svc"}, Namespaced: true},
	{Version: "v1", Resource: "events", Singular: "event", Kind: "Event", ShortNames: []string{"ev"}, Namespaced: true},
	{Version: "v1", Resource: "namespaces", Singular: "namespace", Kind: "Namespace", ShortNames: []string{"ns"}},
	{Version: "v1", Resource: "nodes", Singular: "node", Kind: "Node", ShortNames: []string{"no"}},
	{Version: "v1", Resource: "endpoints", Singular: "endpoints", Kind: "Endpoints", ShortNames: []string{"ep"}, Namespaced: true},
	{Group: "apps", Version: "v1", Resource: "deployments", Singular: "deployment", Kind: "Deployment", ShortNames: []string{"deploy"}, Namespaced: true},
	{Group: "apps", Version: "v1", Resource: "replicasets", Singular: "replicaset", Kind: "ReplicaSet", ShortNames: []string{"rs"}, Namespaced: true},
	{Group: "events.k8s.io", Version: "v1", Resource: "events", Singular: "event", Kind: "Event", ShortNames: []string{"ev"}, Namespaced: true},
	{Group: "coordination.k8s.io", Version: "v1", Resource: "leases", Singular: "lease", Kind: "Lease", Namespaced: true},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices", Singular: "endpointslice", Kind: "EndpointSlice", Namespaced: true},
	{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses", Singular: "ingress", Kind: "Ingress", ShortNames: []string{"ing"}, Namespaced: true},
	{Group: "argoproj.io", Version: "v1alpha1", Resource: "workflows", Singular: "workflow", Kind: "Workflow", ShortNames: []string{"wf"}, Namespaced: true},
	{Group: "route.openshift.io", Version: "v1", Resource: "routes", Singular: "route", Kind: "Route", Namespaced: true},
}

func selectedNames(rules Rules, openshift bool) []string {
	sel, _ := rules.SelectResources(cluster, openshift)
	var out []string
	for _, r := range sel {
		out = append(out, r.GroupResource())
	}
	return out
}

func TestSelectResources(t *testing.T) {
	with := func(f func(*Rules)) Rules {
		r := DefaultRules()
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name      string
		rules     Rules
		openshift bool
		want      []string
	}{
		{"default blacklist", DefaultRules(), false, []string{"configmaps", "deployments.apps", "ingresses.networking.k8s.io", "namespaces", "nodes", "replicasets.apps", "secrets", "services", "workflows.argoproj.io"}},
		{"blacklist by kind, short name and singular", with(func(r *Rules) { r.ExcludeResources = []string{"Secret", "svc", "node", "workflows.argoproj.io"} }), false,
			[]string{"configmaps", "deployments.apps", "endpoints", "events", "ingresses.networking.k8s.io", "leases.coordination.k8s.io", "endpointslices.discovery.k8s.io", "namespaces", "replicasets.apps"}},
		{"whitelist", with(func(r *Rules) {
			r.Mode = Whitelist
			r.IncludeResources = []string{"deployments", "CM", "ingresses.networking.k8s.io"}
		}), false,
			[]string{"configmaps", "deployments.apps", "ingresses.networking.k8s.io"}},
		{"whitelist with crds", with(func(r *Rules) {
			r.Mode = Whitelist
			r.IncludeResources = []string{"deployments"}
			r.IncludeCRDs = []string{"workflows.argoproj.io"}
		}), false, []string{"deployments.apps", "workflows.argoproj.io"}},
		{"whitelist exclude wins", with(func(r *Rules) {
			r.Mode = Whitelist
			r.IncludeResources = []string{"deployments", "secrets"}
			r.ExcludeResources = []string{"secrets"}
		}), false, []string{"deployments.apps"}},
		{"hybrid", with(func(r *Rules) {
			r.Mode = Hybrid
			r.IncludeResources = []string{"deployments", "services", "events"}
			r.IncludeCRDs = []string{"workflows.argoproj.io"}
			r.ExcludeResources = []string{"events"}
		}), false, []string{"deployments.apps", "services", "workflows.argoproj.io"}},
		{"hybrid with empty include is everything minus excludes", with(func(r *Rules) { r.Mode = Hybrid; r.ExcludeResources = []string{"nodes"} }), false,
			[]string{"configmaps", "deployments.apps", "endpoints", "events", "ingresses.networking.k8s.io", "leases.coordination.k8s.io", "endpointslices.discovery.k8s.io", "namespaces", "replicasets.apps", "secrets", "services", "workflows.argoproj.io"}},
		{"bare events names the core group only", with(func(r *Rules) { r.Mode = Whitelist; r.ExcludeResources = nil; r.IncludeResources = []string{"events"} }), false, []string{"events"}},
		{"dotted events names the other group", with(func(r *Rules) {
			r.Mode = Whitelist
			r.ExcludeResources = nil
			r.IncludeResources = []string{"events.events.k8s.io"}
		}), false, []string{"events.events.k8s.io"}},
		{"both event groups are stored once", with(func(r *Rules) {
			r.Mode = Whitelist
			r.ExcludeResources = nil
			r.IncludeResources = []string{"events", "events.events.k8s.io"}
		}), false, []string{"events"}},
		{"openshift on", with(func(r *Rules) { r.Mode = Whitelist; r.IncludeResources = []string{"routes"} }), true, []string{"routes.route.openshift.io"}},
		{"openshift resources off", with(func(r *Rules) {
			r.Mode = Whitelist
			r.IncludeResources = []string{"routes"}
			r.IncludeOpenShiftResources = false
		}), true, nil},
		{"not openshift", with(func(r *Rules) { r.Mode = Whitelist; r.IncludeResources = []string{"routes"} }), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := selectedNames(tc.rules, tc.openshift)
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("selected\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestDroppedResourcesHaveReasons(t *testing.T) {
	r := DefaultRules()
	r.Mode = Whitelist
	r.IncludeResources = []string{"deployments", "events", "events.events.k8s.io"}
	r.ExcludeResources = []string{"secrets"}
	_, dropped := r.SelectResources(cluster, false)
	reasons := map[string]string{}
	for _, d := range dropped {
		reasons[d.Resource.GroupResource()] = d.Reason
	}
	for gr, want := range map[string]string{
		"secrets":                   ReasonExcludedByBlacklist,
		"configmaps":                ReasonNotInWhitelist,
		"routes.route.openshift.io": ReasonOpenShiftExcluded,
		"events.events.k8s.io":      ReasonDuplicate,
	} {
		if reasons[gr] != want {
			t.Errorf("%s: reason %q, want %q", gr, reasons[gr], want)
		}
	}
}

func obj(kind, ns, name string, lbl, ann map[string]string, owners ...metav1.OwnerReference) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetUID(types.UID("uid-" + name))
	u.SetLabels(lbl)
	u.SetAnnotations(ann)
	u.SetOwnerReferences(owners)
	return u
}

type ownerMap map[string]struct {
	obj      *unstructured.Unstructured
	selected bool
}

func (m ownerMap) Owner(ns string, ref metav1.OwnerReference) (metav1.Object, bool, bool) {
	o, ok := m[ns+"/"+ref.Name]
	if !ok {
		return nil, false, false
	}
	return o.obj, o.selected, true
}

func ownerRef(name string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: types.UID("uid-" + name)}
}

func TestKeepObject(t *testing.T) {
	cm := Resource{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespaced: true}
	nsRes := Resource{Version: "v1", Resource: "namespaces", Kind: "Namespace"}
	node := Resource{Version: "v1", Resource: "nodes", Kind: "Node"}
	sel := func(s string) labels.Selector {
		l, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	secrets := Resource{Version: "v1", Resource: "secrets", Kind: "Secret", Namespaced: true}
	secret := func(typ string) *unstructured.Unstructured {
		o := obj("Secret", "a", "s", nil, nil, ownerRef("web"))
		o.Object["type"] = typ
		return o
	}
	owners := ownerMap{
		"a/web":   {obj("Deployment", "a", "web", map[string]string{"app": "web"}, nil), true},
		"a/other": {obj("Deployment", "a", "other", nil, nil), false},
		"a/rs":    {obj("ReplicaSet", "a", "rs", nil, nil, ownerRef("web")), false},
	}
	for _, tc := range []struct {
		name         string
		rules        func(*Rules)
		res          Resource
		obj          *unstructured.Unstructured
		typeSelected bool
		want         string // reason, "" = kept
	}{
		{"default keeps", nil, cm, obj("ConfigMap", "a", "x", nil, nil), true, ""},
		{"namespace excluded", func(r *Rules) { r.ExcludeNamespaces = []string{"a"} }, cm, obj("ConfigMap", "a", "x", nil, nil), true, ReasonNamespaceExcluded},
		{"namespace not included", func(r *Rules) { r.IncludeNamespaces = []string{"b"} }, cm, obj("ConfigMap", "a", "x", nil, nil), true, ReasonNamespaceNotListed},
		{"exclude wins over include", func(r *Rules) { r.IncludeNamespaces = []string{"a"}; r.ExcludeNamespaces = []string{"a"} }, cm, obj("ConfigMap", "a", "x", nil, nil), true, ReasonNamespaceExcluded},
		{"namespace object judged by its name", func(r *Rules) { r.ExcludeNamespaces = []string{"kube-system"} }, nsRes, obj("Namespace", "", "kube-system", nil, nil), true, ReasonNamespaceExcluded},
		{"namespace object included", func(r *Rules) { r.IncludeNamespaces = []string{"a"} }, nsRes, obj("Namespace", "", "a", nil, nil), true, ""},
		{"cluster-scoped ignores namespace filters", func(r *Rules) { r.IncludeNamespaces = []string{"a"} }, node, obj("Node", "", "n1", nil, nil), true, ""},
		{"label selector", func(r *Rules) { r.LabelSelector = sel("app=web") }, cm, obj("ConfigMap", "a", "x", map[string]string{"app": "db"}, nil), true, ReasonLabelSelector},
		{"label selector matches", func(r *Rules) { r.LabelSelector = sel("app=web") }, cm, obj("ConfigMap", "a", "x", map[string]string{"app": "web"}, nil), true, ""},
		{"annotation selector", func(r *Rules) { r.AnnotationSelector = sel("backup.io/enabled=true") }, cm, obj("ConfigMap", "a", "x", nil, map[string]string{"backup.io/enabled": "false"}), true, ReasonAnnotationSelector},
		{"annotation selector matches", func(r *Rules) { r.AnnotationSelector = sel("backup.io/enabled=true") }, cm, obj("ConfigMap", "a", "x", nil, map[string]string{"backup.io/enabled": "true"}), true, ""},
		{"annotation exists selector", func(r *Rules) { r.AnnotationSelector = sel("backup.io/skip!=true") }, cm, obj("ConfigMap", "a", "x", nil, nil), true, ""},
		{"unselected type without follow", nil, cm, obj("ConfigMap", "a", "x", nil, nil, ownerRef("web")), false, ReasonNotInWhitelist},
		{"owner kept: follow", func(r *Rules) { r.FollowOwnerReferences = true }, cm, obj("Pod", "a", "p", nil, nil, ownerRef("web")), false, ""},
		{"owner chain kept: follow", func(r *Rules) { r.FollowOwnerReferences = true }, cm, obj("Pod", "a", "p", nil, nil, metav1.OwnerReference{Name: "rs", UID: "uid-rs"}), false, ""},
		{"owner not kept", func(r *Rules) { r.FollowOwnerReferences = true }, cm, obj("Pod", "a", "p", nil, nil, ownerRef("other")), false, ReasonNotInWhitelist},
		{"owner uid mismatch", func(r *Rules) { r.FollowOwnerReferences = true }, cm, obj("Pod", "a", "p", nil, nil, metav1.OwnerReference{Name: "web", UID: "stale"}), false, ReasonNotInWhitelist},
		{"follow overrides label selector", func(r *Rules) { r.FollowOwnerReferences = true; r.LabelSelector = sel("app=web") }, cm, obj("Pod", "a", "p", nil, nil, ownerRef("web")), true, ""},
		{"service account token", nil, secrets, secret(ServiceAccountTokenType), true, ReasonServiceAccountToken},
		{"service account token whatever its owner", func(r *Rules) { r.FollowOwnerReferences = true }, secrets, secret(ServiceAccountTokenType), false, ReasonServiceAccountToken},
		{"service account token included", func(r *Rules) { r.IncludeServiceAccountTokens = true }, secrets, secret(ServiceAccountTokenType), true, ""},
		{"opaque secret", nil, secrets, secret("Opaque"), true, ""},
		{"follow does not override namespace exclusion", func(r *Rules) { r.FollowOwnerReferences = true; r.ExcludeNamespaces = []string{"a"} }, cm, obj("Pod", "a", "p", nil, nil, ownerRef("web")), false, ReasonNamespaceExcluded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := DefaultRules()
			if tc.rules != nil {
				tc.rules(&r)
			}
			kept, reason := r.KeepObject(tc.res, tc.obj, tc.typeSelected, owners)
			if kept != (tc.want == "") || reason != tc.want {
				t.Errorf("kept=%v reason=%q, want reason %q", kept, reason, tc.want)
			}
		})
	}
}

func TestOwnerCycleTerminates(t *testing.T) {
	r := DefaultRules()
	r.FollowOwnerReferences = true
	a := obj("Thing", "n", "a", nil, nil, metav1.OwnerReference{Name: "b", UID: "uid-b"})
	b := obj("Thing", "n", "b", nil, nil, metav1.OwnerReference{Name: "a", UID: "uid-a"})
	owners := ownerMap{"n/a": {a, false}, "n/b": {b, false}}
	if kept, _ := r.KeepObject(Resource{Resource: "things", Namespaced: true}, a, false, owners); kept {
		t.Error("cycle of unselected objects was kept")
	}
}

func FuzzSelectors(f *testing.F) {
	f.Add("backup.io/enabled=true", "backup.io/enabled", "true", "deployments")
	f.Add("a in (x,y),!b", "a", "x", "events.events.k8s.io")
	f.Add("tier notin (cache)", "tier", "web", "CM")
	f.Fuzz(func(t *testing.T, selector, key, value, entry string) {
		sel, err := labels.Parse(selector)
		if err == nil {
			_ = sel.Matches(labels.Set{key: value})
		}
		r := DefaultRules()
		r.Mode = Whitelist
		r.IncludeResources = []string{entry}
		selected, dropped := r.SelectResources(cluster, true)
		if len(selected)+len(dropped) != len(cluster) {
			t.Fatalf("%d selected + %d dropped != %d", len(selected), len(dropped), len(cluster))
		}
		e := strings.ToLower(strings.TrimSpace(entry))
		if strings.Contains(e, ".") {
			for _, s := range selected {
				if s.Resource+"."+s.Group != e {
					t.Fatalf("entry %q selected %s", entry, s.GroupResource())
				}
			}
		}
	})
}

// TestEncodeMatchesSigsYAML checks the direct encoder against the JSON
// round trip of sigs.k8s.io/yaml on objects with every value type.
