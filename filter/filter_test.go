package filter

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	sigsyaml "sigs.k8s.io/yaml"
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

func sampleObject() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata": map[string]any{
			"name":              "settings",
			"namespace":         "team-a",
			"uid":               "0d1c2b3a-0000-4000-8000-000000000001",
			"resourceVersion":   "12345",
			"selfLink":          "/api/v1/namespaces/team-a/configmaps/settings",
			"creationTimestamp": "2026-11-26T04:00:00Z",
			"labels":            map[string]any{"app": "web"},
			"annotations":       map[string]any{"note": ""},
			"managedFields":     []any{map[string]any{"manager": "kubectl", "operation": "Apply"}},
		},
		"data": map[string]any{
			"enabled": "yes",
			"mode":    "on",
			"empty":   "",
			"number":  "0123",
			"float":   "1.50",
			"null":    "null",
			"tilde":   "~",
			"multi":   "line one\nline two\n",
		},
		"status": map[string]any{"phase": "Ready"},
	}}
}

func TestEncodeGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules func(*Rules)
	}{
		{"default", nil},
		{"with-status-and-managed-fields", func(r *Rules) { r.IncludeStatus = true; r.IncludeManagedFields = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := DefaultRules()
			if tc.rules != nil {
				tc.rules(&r)
			}
			body, err := r.Encode(sampleObject())
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".yaml")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != string(want) {
				t.Errorf("encoded:\n%s\nwant:\n%s", body, want)
			}
		})
	}
}

func TestEncodeIgnoresVolatileFields(t *testing.T) {
	r := DefaultRules()
	a, err := r.Encode(sampleObject())
	if err != nil {
		t.Fatal(err)
	}
	changed := sampleObject()
	changed.SetResourceVersion("99999")
	changed.Object["status"] = map[string]any{"phase": "Failed"}
	changed.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "other"}})
	b, err := r.Encode(changed)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("a change of resourceVersion, status and managedFields changed the bytes")
	}
	orig := sampleObject()
	if _, err := r.Encode(orig); err != nil || orig.GetResourceVersion() != "12345" {
		t.Error("Encode modified its input")
	}
}

func TestEncodeLimits(t *testing.T) {
	r := DefaultRules()
	r.MaxResourceSize = 100
	_, err := r.Encode(sampleObject())
	var inv *InvalidError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &inv) || inv.Reason != ReasonTooLarge {
		t.Errorf("want too_large, got %v", err)
	}
}

func TestCheck(t *testing.T) {
	r := DefaultRules()
	obj := sampleObject()
	body, err := r.Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(body, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
		t.Errorf("a good document failed the check: %v", err)
	}
	var inv *InvalidError
	nameless := sampleObject()
	unstructured.RemoveNestedField(nameless.Object, "metadata", "name")
	namelessBody, err := r.Encode(nameless)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, apiVersion, kind, objName string
		body                            []byte
	}{
		{"nameless", obj.GetAPIVersion(), obj.GetKind(), "", namelessBody},
		{"other name", obj.GetAPIVersion(), obj.GetKind(), "other", body},
		{"other kind", obj.GetAPIVersion(), "Secret", obj.GetName(), body},
		{"not YAML", obj.GetAPIVersion(), obj.GetKind(), obj.GetName(), []byte("a: [b")},
	} {
		if err := r.Check(tc.body, tc.apiVersion, tc.kind, tc.objName); !errors.As(err, &inv) || inv.Reason != ReasonInvalid {
			t.Errorf("%s: want invalid, got %v", tc.name, err)
		}
	}
	r.ValidateYAML = false
	if err := r.Check([]byte("a: [b"), "v1", "ConfigMap", "x"); err != nil {
		t.Errorf("validate-yaml false still validated: %v", err)
	}
}

// FuzzSelectors checks that the annotation selector and resource matching
// never panic and that a dotted entry only ever matches its own group.
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
func TestEncodeMatchesSigsYAML(t *testing.T) {
	obj := sampleObject()
	obj.Object["spec"] = map[string]any{
		"replicas": int64(3), "ratio": 0.25, "big": int64(1) << 53, "enabled": true, "none": nil,
		"list":   []any{"a", int64(1), map[string]any{"z": "last", "a": "first"}},
		"empty":  map[string]any{},
		"emptyL": []any{},
		"quoted": []any{"yes", "no", "on", "off", "true", "1", "1.5", "~", "null", "", " lead", "a: b", "#c", "- d", "0x1F", "1e3", ".inf"},
	}
	clean := DefaultRules().Clean(obj)
	got, err := marshalYAML(clean.Object)
	if err != nil {
		t.Fatal(err)
	}
	want, err := sigsyaml.Marshal(clean.Object)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("direct encoder:\n%s\nsigs.k8s.io/yaml:\n%s", got, want)
	}
}

// BenchmarkEncode compares the direct encoder with sigs.k8s.io/yaml's JSON
// round trip (the baseline), measured in the same run.
func BenchmarkEncode(b *testing.B) {
	obj := DefaultRules().Clean(sampleObject()).Object
	b.Run("baseline-sigs-yaml", func(b *testing.B) {
		for b.Loop() {
			if _, err := sigsyaml.Marshal(obj); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			if _, err := marshalYAML(obj); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCheck is validate-yaml's cost per written document.
func BenchmarkCheck(b *testing.B) {
	r := DefaultRules()
	obj := sampleObject()
	body, err := r.Encode(obj)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := r.Check(body, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
			b.Fatal(err)
		}
	}
}

// roundTrip decodes a stored document the way kubectl apply does.
func roundTrip(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var back map[string]any
	if err := sigsyaml.Unmarshal(body, &back); err != nil {
		t.Fatalf("stored document does not parse: %v\n%s", err, body)
	}
	return back
}

func TestMergeKeyIsKeptAsAKey(t *testing.T) {
	r := DefaultRules()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.com/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w"},
		"spec": map[string]any{
			"<<":    map[string]any{"replicas": int64(1)},
			"image": "x",
			"list":  []any{map[string]any{"<<": "in a list"}},
			"text":  "<<cluster-backup-merge-key: not a key\n<<: nor this\n",
		},
	}}
	body, err := r.Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(body, "example.com/v1", "Widget", "w"); err != nil {
		t.Fatalf("check: %v\n%s", err, body)
	}
	want := r.Clean(obj).Object
	if got := roundTrip(t, body); !jsonEqual(t, got, want) {
		t.Errorf("round trip changed the object:\n%s", body)
	}
	// A plain << written by hand reads back merged: validate-yaml rejects it.
	merged := []byte("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  <<:\n    replicas: 1\n  image: x\n")
	var inv *InvalidError
	if err := r.Check(merged, "example.com/v1", "Widget", "w"); !errors.As(err, &inv) {
		t.Errorf("a document that reads back merged passed validate-yaml")
	}
}

// jsonEqual compares two decoded objects as JSON sees them.
func jsonEqual(t testing.TB, a, b any) bool {
	t.Helper()
	norm := func(v any) any {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(j, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// FuzzEncodeRoundTrip: any JSON value stored in an object either reads back
// from the stored YAML as the same object, or is rejected as invalid.
func FuzzEncodeRoundTrip(f *testing.F) {
	for _, seed := range []string{
		`{"a":"b"}`, `{"<<":{"replicas":1},"image":"x"}`, `["yes","on","","1.0","0x1F","~",null]`,
		`{"k":"line\nline","n":12345678901234567890,"f":1e300,"t":true}`, `{"":{"- a":"#"}}`,
		`{"<<cluster-backup-merge-key":"x","<<":"y"}`, `"\u00e9\ud83d\ude00"`,
	} {
		f.Add([]byte(seed))
	}
	r := DefaultRules()
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}, "data": v,
		}}
		want := r.Clean(obj).Object
		body, err := r.Encode(obj)
		if err == nil {
			err = r.Check(body, "v1", "ConfigMap", "x")
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejected without ErrInvalid: %v", err)
			}
			return
		}
		if got := roundTrip(t, body); !jsonEqual(t, got, want) {
			t.Fatalf("accepted but reads back different:\n%s", body)
		}
	})
}
