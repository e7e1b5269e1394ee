package object

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes/scheme"
)

var east = Layout{Prefix: "clusterbackup", Cluster: "east"}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		ref  Ref
		want string
	}{
		{Ref{Resource: "configmaps", Namespace: "default", Name: "a"}, "clusterbackup/east/default/configmaps/a.yaml"},
		{Ref{Group: "apps", Resource: "deployments", Namespace: "default", Name: "nginx"}, "clusterbackup/east/default/deployments/nginx.yaml"},
		{Ref{Group: "batch", Resource: "cronjobs", Namespace: "n", Name: "c"}, "clusterbackup/east/n/cronjobs/c.yaml"},
		{Ref{Group: "autoscaling", Resource: "horizontalpodautoscalers", Namespace: "n", Name: "h"}, "clusterbackup/east/n/horizontalpodautoscalers/h.yaml"},
		{Ref{Group: "policy", Resource: "poddisruptionbudgets", Namespace: "n", Name: "p"}, "clusterbackup/east/n/poddisruptionbudgets/p.yaml"},
		{Ref{Resource: "namespaces", Name: "default"}, "clusterbackup/east/_cluster/namespaces/default.yaml"},
		{Ref{Group: "networking.k8s.io", Resource: "ingresses", Namespace: "n", Name: "i"}, "clusterbackup/east/n/ingresses.networking.k8s.io/i.yaml"},
		{Ref{Group: "argoproj.io", Resource: "workflows", Namespace: "team-a", Name: "nightly"}, "clusterbackup/east/team-a/workflows.argoproj.io/nightly.yaml"},
		{Ref{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "system:controller:x"}, "clusterbackup/east/_cluster/clusterroles.rbac.authorization.k8s.io/system:controller:x.yaml"},
	} {
		got := east.Key(tc.ref)
		if got != tc.want {
			t.Errorf("%+v: key %q, want %q", tc.ref, got, tc.want)
		}
		back, ok := east.Parse(got)
		if !ok || back.Segment != tc.ref.Segment() || back.Ref(GroupResource{tc.ref.Group, tc.ref.Resource}) != tc.ref {
			t.Errorf("Parse(%q) = %+v %v", got, back, ok)
		}
	}
	for _, bad := range []string{
		"clusterbackup/west/default/configmaps/a.yaml",
		"clusterbackup/east/default/configmaps/a.json",
		"clusterbackup/east/configmaps/a.yaml",
		"clusterbackup/east/a/b/c/d.yaml",
		"clusterbackup/eastern/default/configmaps/a.yaml",
		"clusterbackup/east/default/configmaps/.yaml",
		east.IdentityKey(),
		east.IndexKey(),
		east.PackKey(),
	} {
		if _, ok := east.Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestLayoutRoundTripBuiltins builds the key of an object of every type
// that client-go knows (every built-in group and version), reads it back
// and resolves its segment: each must come back as the same object, and no
// two built-in types may share a segment.
func TestLayoutRoundTripBuiltins(t *testing.T) {
	var types []GroupResource
	seen := map[GroupResource]bool{}
	for gvk := range scheme.Scheme.AllKnownTypes() {
		if strings.HasSuffix(gvk.Kind, "List") || strings.HasSuffix(gvk.Kind, "Options") || gvk.Kind == "WatchEvent" || gvk.Kind == "Status" {
			continue
		}
		if gvk.Kind == "Scale" {
			continue // the scale subresource of apps and autoscaling, never stored
		}
		if gvk.Group == "extensions" {
			// Served by no supported API server; its plurals are stored as
			// *.extensions and collide with nothing.
			continue
		}
		plural, _ := meta.UnsafeGuessKindToResource(gvk)
		gr := GroupResource{Group: gvk.Group, Resource: plural.Resource}
		if !seen[gr] {
			seen[gr] = true
			types = append(types, gr)
		}
	}
	if len(types) < 50 {
		t.Fatalf("only %d built-in types found", len(types))
	}
	segments, err := NewSegments(types)
	if err != nil {
		t.Fatalf("built-in types collide: %v", err)
	}
	for _, gr := range types {
		for _, ns := range []string{"", "team-a"} {
			ref := Ref{Group: gr.Group, Resource: gr.Resource, Namespace: ns, Name: "a.b-c"}
			key := east.Key(ref)
			k, ok := east.Parse(key)
			if !ok {
				t.Fatalf("Parse(%q) refused its own key", key)
			}
			back, known := segments.Resolve(k.Segment)
			if !known || k.Ref(back) != ref {
				t.Errorf("%+v: key %q resolves to %+v (known %v)", ref, key, k.Ref(back), known)
			}
		}
	}
}

func TestSharedSegmentResolvesToNeither(t *testing.T) {
	s, err := NewSegments([]GroupResource{{"apps", "widgets"}, {"batch", "widgets"}, {"", "configmaps"}})
	if err == nil || !strings.Contains(err.Error(), `"widgets"`) {
		t.Fatalf("err = %v, want one naming the shared segment", err)
	}
	if gr, ok := s.Resolve("widgets"); ok {
		t.Errorf("a shared segment resolved to %v", gr)
	}
	if _, ok := s.Resolve("configmaps"); !ok {
		t.Error("an unshared segment was lost")
	}
}
