package restore

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/cluster-backup/cluster-backup/object"
)

// store is a memReader holding documents by key and version.
type store struct {
	memReader
	layout object.Layout
}

func newStore() *store {
	return &store{
		memReader: memReader{bodies: map[string]string{}, metas: map[string]object.Meta{}},
		layout:    object.Layout{Prefix: "clusterbackup", Cluster: "east"},
	}
}

// put stores body as version id of the object, and returns its item.
func (s *store) put(resource, ns, name, id, body string) Item {
	key := s.layout.Key(object.Ref{Resource: resource, Namespace: ns, Name: name})
	s.bodies[key+"@"+id] = body
	s.metas[key+"@"+id] = object.Meta{SHA256: object.Digest([]byte(body))}
	k, _ := s.layout.Parse(key)
	return Item{Key: k, Version: object.Version{Key: key, ID: id, Time: time.Now()}}
}

func configMap(ns, name, data string, labels ...string) string {
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n"
	if len(labels) == 2 {
		doc += "  labels:\n    " + labels[0] + ": " + labels[1] + "\n"
	}
	return doc + "data:\n  v: " + data + "\n"
}

func deployment(name, image string) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " + name + "\n  namespace: shop\nspec:\n  template:\n    spec:\n      containers:\n      - image: " + image + "\n        name: web\n"
}

func TestDiffBackups(t *testing.T) {
	s := newStore()
	before := []Item{
		s.put("configmaps", "shop", "changed", "1", configMap("shop", "changed", "old")),
		s.put("configmaps", "shop", "removed", "1", configMap("shop", "removed", "x")),
		s.put("configmaps", "shop", "same", "1", configMap("shop", "same", "x")),
		s.put("configmaps", "other", "rewritten", "1", configMap("other", "rewritten", "x")),
		s.put("deployments", "shop", "web", "1", deployment("web", "web:1")),
	}
	after := []Item{
		s.put("configmaps", "shop", "changed", "2", configMap("shop", "changed", "new")),
		s.put("configmaps", "shop", "added", "1", configMap("shop", "added", "x")),
		s.put("configmaps", "shop", "same", "1", configMap("shop", "same", "x")),
		// a new version, equal in content: no difference
		s.put("configmaps", "other", "rewritten", "2", configMap("other", "rewritten", "x")),
		// a built-in group stored without its suffix, read with no cluster
		// to ask which resource serves the kind
		s.put("deployments", "shop", "web", "2", deployment("web", "web:2")),
	}
	diffs, failed := DiffBackups(context.Background(), s, before, after, 4, Options{})
	if len(failed) != 0 {
		t.Fatalf("failed %v", failed)
	}
	var got []string
	for _, d := range diffs {
		got = append(got, d.Change+" "+d.Namespace+"/"+d.Name)
	}
	if strings.Join(got, ", ") != "+ shop/added, ~ shop/changed, - shop/removed, ~ shop/web" {
		t.Errorf("diffs %v", got)
	}
	if d := diffs[1].Details(); !strings.Contains(d, "-  v: old") || !strings.Contains(d, "+  v: new") {
		t.Errorf("details of the change:\n%s", d)
	}
}

func TestDiffLive(t *testing.T) {
	s := newStore()
	items := []Item{
		s.put("configmaps", "shop", "same", "1", configMap("shop", "same", "x", "app", "web")),
		s.put("configmaps", "shop", "changed", "1", configMap("shop", "changed", "backup", "app", "web")),
		s.put("configmaps", "shop", "missing", "1", configMap("shop", "missing", "x", "app", "web")),
		s.put("configmaps", "shop", "misfiled", "1", configMap("kube-system", "misfiled", "x", "app", "web")),
	}
	live := func(name, data string, lbl ...string) runtime.Object {
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `","namespace":"shop","uid":"u-` + name + `","resourceVersion":"7"},"data":{"v":"` + data + `"}}`)); err != nil {
			t.Fatal(err)
		}
		if len(lbl) == 2 {
			o.SetLabels(map[string]string{lbl[0]: lbl[1]})
		}
		return o
	}
	cms := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	ns := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{cms: "ConfigMapList", ns: "NamespaceList"},
		live("same", "x", "app", "web"), live("changed", "live", "app", "web"),
		live("extra-web", "x", "app", "web"), live("extra-api", "x", "app", "api"))
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	target := Target{Dynamic: dyn, Mapper: resettable{mapper}}
	opts := Options{Selector: labels.SelectorFromSet(labels.Set{"app": "web"})}
	diffs, failed := DiffLive(context.Background(), target, s, items, 4, opts)
	var got []string
	for _, d := range diffs {
		got = append(got, d.Change+" "+d.Resource+"/"+d.Name)
	}
	// shop's Namespace is not in the backup: only its existence is asked
	// for, and the fake cluster lacks it.
	want := "~ configmaps/changed, - configmaps/extra-web, + configmaps/missing, + namespaces/shop"
	if strings.Join(got, ", ") != want {
		t.Errorf("diffs %v, want %s", got, want)
	}
	if len(failed) != 1 || failed[0].Name != "misfiled" || !strings.Contains(failed[0].Reason, "namespace") {
		t.Errorf("failed %+v, want the misfiled document", failed)
	}
}

// resettable makes a RESTMapper a ResettableRESTMapper.
type resettable struct{ meta.RESTMapper }

func (resettable) Reset() {}

// TestMaskedTextsWriteSecretsAsStored: a Secret's two versions come back
// masked and in the layout the service stores documents in; any other
// document is as stored, and a Secret that does not parse is withheld.
func TestMaskedTextsWriteSecretsAsStored(t *testing.T) {
	older := []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: app\ndata:\n  password: b2xk\n  user: dXNlcg==\ntype: Opaque\n")
	newer := []byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: app\ndata:\n  password: bmV3\n  user: dXNlcg==\ntype: Opaque\n")
	o, n := MaskedTexts(older, newer)
	for _, text := range []string{o, n} {
		if strings.Contains(text, "b2xk") || strings.Contains(text, "bmV3") || strings.Contains(text, "dXNlcg==") {
			t.Fatalf("a value in the clear:\n%s", text)
		}
		// Line for line the service's document, but for the values.
		want := strings.Split("apiVersion: v1\ndata:\n  password: *\n  user: *\nkind: Secret\nmetadata:\n  name: db\n  namespace: app\ntype: Opaque\n", "\n")
		got := strings.Split(text, "\n")
		if len(got) != len(want) {
			t.Fatalf("not in the stored layout:\n%s", text)
		}
		for i := range got {
			if prefix, ok := strings.CutSuffix(want[i], "*"); !strings.HasPrefix(got[i], prefix) || (!ok && got[i] != want[i]) {
				t.Errorf("line %d is %q, want %q", i+1, got[i], want[i])
			}
		}
	}
	if !strings.Contains(o, "password: '*** (before)'") || !strings.Contains(n, "password: '*** (after)'") || !strings.Contains(n, "user: '***'") {
		t.Errorf("masks:\n%s\n%s", o, n)
	}
	cm := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  z: \"1\"\n  a: \"2\"\n")
	if o, n := MaskedTexts(nil, cm); o != "" || n != string(cm) {
		t.Errorf("a ConfigMap is not as stored: %q %q", o, n)
	}
	if _, n := MaskedTexts(older, []byte("kind: Secret\ndata: [unclosed")); strings.Contains(n, "unclosed") || !strings.Contains(n, "withheld") {
		t.Errorf("an unparseable Secret: %q", n)
	}
}
