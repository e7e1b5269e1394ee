package object

import "testing"

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
		got := tc.ref.Key("clusterbackup", "east")
		if got != tc.want {
			t.Errorf("%+v: key %q, want %q", tc.ref, got, tc.want)
		}
		back, ok := ParseKey("clusterbackup", "east", got)
		if !ok || back.Ref(tc.ref.Group, tc.ref.Resource).Key("clusterbackup", "east") != got || back.Segment != ResourceSegment(tc.ref.Group, tc.ref.Resource) {
			t.Errorf("ParseKey(%q) = %+v %v", got, back, ok)
		}
	}
	for _, bad := range []string{
		"clusterbackup/west/default/configmaps/a.yaml",
		"clusterbackup/east/default/configmaps/a.json",
		"clusterbackup/east/configmaps/a.yaml",
		"clusterbackup/east/a/b/c/d.yaml",
		"clusterbackup/eastern/default/configmaps/a.yaml",
		IdentityKey("clusterbackup", "east"),
	} {
		if _, ok := ParseKey("clusterbackup", "east", bad); ok {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{ResourceVersion: "1", UID: "u", APIVersion: "apps/v1", SHA256: Digest([]byte("x")), ClusterUID: "c"}
	served := map[string]string{}
	for k, v := range m.Map() {
		served["X-Amz-Meta-"+k] = v // how S3 listings return them
	}
	if got := MetaFromMap(served); got != m {
		t.Errorf("got %+v, want %+v", got, m)
	}
}
