package watcher

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
)

func deployment() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{
			"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
			"labels":        map[string]any{"app": "web"},
			"annotations":   map[string]any{"backup.io/skip": "false", "kubectl.kubernetes.io/last-applied-configuration": "{...large...}"},
			"managedFields": []any{map[string]any{"manager": "kubectl"}},
		},
		"spec": map[string]any{
			"replicas": int64(2),
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "web", "image": "registry.example/web:1.0", "imagePullPolicy": "IfNotPresent",
					"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
				}}, "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
			},
		},
		"status": map[string]any{"replicas": int64(2)},
	}}
}

func TestCompactKeepsWhatIsStoredAndWhatFiltersRead(t *testing.T) {
	rules := filter.DefaultRules()
	enc, err := EncodeOptions(rules, nil).Encode(deployment())
	if err != nil {
		t.Fatal(err)
	}
	want := enc.Body
	out, err := compact(rules, []string{"backup.io/skip"}, nil, nil)(deployment())
	if err != nil {
		t.Fatal(err)
	}
	c := out.(*cached)
	doc, err := c.document("apps/v1")
	if err != nil {
		t.Fatal(err)
	}
	if string(doc.Body) != string(want) {
		t.Errorf("document:\n%s\nwant:\n%s", doc.Body, want)
	}
	if doc.Meta != (object.Meta{ResourceVersion: "42", UID: "u-1", APIVersion: "apps/v1", SHA256: object.Digest(want), Manager: "kubectl"}) {
		t.Errorf("meta %+v", doc.Meta)
	}
	if c.GetLabels() != nil || len(c.GetAnnotations()) != 1 || c.GetAnnotations()["backup.io/skip"] != "false" {
		t.Errorf("labels %v annotations %v: want no labels (no label selector) and the selector's annotation", c.GetLabels(), c.GetAnnotations())
	}
	if len(c.packed.Bytes) >= len(want) {
		t.Errorf("compressed %d bytes of %d", len(c.packed.Bytes), len(want))
	}
	t.Logf("document %d bytes, cached compressed %d bytes", len(want), len(c.packed.Bytes))
	if again, _ := compact(rules, nil, nil, nil)(c); again != c {
		t.Error("compact is not idempotent on a cached object")
	}
	// With a label selector, labels are kept for it.
	rules.LabelSelector = labels.SelectorFromSet(labels.Set{"app": "web"})
	out, _ = compact(rules, nil, nil, nil)(deployment())
	c = out.(*cached)
	if c.GetLabels()["app"] != "web" {
		t.Errorf("labels %v with a label selector", c.GetLabels())
	}
	cp := c.DeepCopyObject().(*cached)
	cp.labels["app"] = "changed"
	if c.labels["app"] != "web" {
		t.Error("DeepCopyObject shares labels")
	}
	rules.LabelSelector = labels.Everything()

	rules.MaxResourceSize = 10
	out, _ = compact(rules, nil, nil, nil)(deployment())
	if _, err := out.(*cached).document("apps/v1"); !errors.Is(err, encode.ErrInvalid) {
		t.Errorf("oversized object: %v", err)
	}
}

func TestTheLastFieldManagerIsRecorded(t *testing.T) {
	at := func(sec int64) *metav1.Time { t := metav1.Unix(sec, 0); return &t }
	for name, tc := range map[string]struct {
		fields []metav1.ManagedFieldsEntry
		want   string
	}{
		"none": {nil, ""},
		"the latest": {[]metav1.ManagedFieldsEntry{
			{Manager: "helm", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(200)},
			{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(300)},
			{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, Time: at(100)},
		}, "kubectl-edit"},
		"status aside": {[]metav1.ManagedFieldsEntry{
			{Manager: "helm", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(200)},
			{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(900), Subresource: "status"},
		}, "helm"},
		"a tie goes to the last listed": {[]metav1.ManagedFieldsEntry{
			{Manager: "a", Time: at(5)}, {Manager: "b", Time: at(5)},
		}, "b"},
		"no time counts as oldest": {[]metav1.ManagedFieldsEntry{
			{Manager: "timed", Time: at(5)}, {Manager: "untimed"},
		}, "timed"},
		"escaped": {[]metav1.ManagedFieldsEntry{{Manager: "ctl\nwith newline é", Time: at(5)}}, "ctl%0Awith%20newline%20%C3%A9"},
	} {
		if got := lastManager(tc.fields).Value(); got != tc.want {
			t.Errorf("%s: lastManager = %q, want %q", name, got, tc.want)
		}
	}
	u := deployment()
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "helm", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(10)}})
	out, err := compact(filter.DefaultRules(), nil, nil, nil)(u)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := out.(*cached).document("apps/v1")
	if err != nil || doc.Meta.Manager != "helm" || strings.Contains(string(doc.Body), "managedFields") {
		t.Errorf("document of an object helm changed: manager %q, %v; body:\n%s", doc.Meta.Manager, err, doc.Body)
	}
}

func TestCachedMetaIsWhatInformersRead(t *testing.T) {
	controller := true
	u := deployment()
	u.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "X", Name: "owner", UID: "o-1", Controller: &controller}})
	out, err := compact(filter.DefaultRules(), nil, nil, nil)(u)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := meta.Accessor(out)
	if err != nil {
		t.Fatal(err)
	}
	if acc.GetNamespace() != "shop" || acc.GetName() != "web" || acc.GetUID() != "u-1" || acc.GetResourceVersion() != "42" {
		t.Errorf("metadata %s/%s %s %s", acc.GetNamespace(), acc.GetName(), acc.GetUID(), acc.GetResourceVersion())
	}
	if key, _ := cache.MetaNamespaceKeyFunc(out); key != "shop/web" {
		t.Errorf("informer key %q", key)
	}
	if got := acc.GetOwnerReferences(); len(got) != 1 || got[0].UID != "o-1" || !*got[0].Controller {
		t.Errorf("owner references %v", got)
	}
	cp := out.(*cached).DeepCopyObject().(*cached)
	*cp.owners[0].Controller = false
	if !*acc.GetOwnerReferences()[0].Controller {
		t.Error("DeepCopyObject shares owner references")
	}
	// The caches hold one of these for every object of the cluster.
	if size := unsafe.Sizeof(cached{}); size > 216 {
		t.Errorf("a cached object takes %d bytes before its document", size)
	}
}

func TestDocumentsOfManyObjectsShareADictionary(t *testing.T) {
	rules := filter.DefaultRules()
	var dict dictionary
	transform := compact(rules, nil, nil, &dict)
	var alone, against int
	var all []*cached
	var wants [][]byte
	for i := range 3 * dictAfter {
		u := deployment()
		u.SetName(fmt.Sprintf("web-%d", i))
		u.SetUID(types.UID(fmt.Sprintf("u-%d", i)))
		want, err := EncodeOptions(rules, nil).Encode(u.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		out, err := transform(u)
		if err != nil {
			t.Fatal(err)
		}
		c := out.(*cached)
		// The first documents of a type are compressed on their own;
		// from the dictAfter-th on, against one dictionary.
		if (i+1 < dictAfter) != (c.packed.Dict == nil) {
			t.Fatalf("document %d: dictionary %v", i, c.packed.Dict != nil)
		}
		if c.packed.Dict != nil && c.packed.Dict != dict.dict.Load() {
			t.Fatalf("document %d: another dictionary", i)
		}
		all = append(all, c)
		wants = append(wants, want.Body)
		if i < dictAfter-1 {
			alone += len(c.packed.Bytes)
		} else if i >= 2*dictAfter {
			against += len(c.packed.Bytes)
		}
	}
	// Every document reads back, read after all were compressed: the
	// dictionary does not share the buffers compact reuses.
	for i, c := range all {
		doc, err := c.document("apps/v1")
		if err != nil || string(doc.Body) != string(wants[i]) {
			t.Fatalf("document %d: %v\n%s\nwant\n%s", i, err, doc.Body, wants[i])
		}
	}
	// The documents differ in their names only: against the dictionary
	// they are a handful of matches.
	if against*4 > alone {
		t.Errorf("%d bytes against the dictionary, %d alone", against, alone)
	}
	t.Logf("%d documents: %d bytes on their own, %d against the dictionary", dictAfter-1, alone, against)

	// Encrypted documents use none, and make none: ciphertext shares
	// nothing with other ciphertext.
	var secrets dictionary
	for range 2 * dictAfter {
		if secrets.of(all[0].packed.Bytes, true) != nil {
			t.Fatal("an encrypted document is compressed against a dictionary")
		}
	}
	if secrets.dict.Load() != nil || secrets.seen.Load() != 0 {
		t.Error("encrypted documents made a dictionary")
	}
}

// TestCachedSecretsTellTheirType: a cached Secret says whether it holds a
// service account's token, so that the filters leave it out.
func TestCachedSecretsTellTheirType(t *testing.T) {
	rules := filter.DefaultRules()
	secrets := filter.Resource{Version: "v1", Resource: "secrets", Kind: "Secret", Namespaced: true}
	for typ, keep := range map[string]bool{filter.ServiceAccountTokenType: false, "Opaque": true, "": true} {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{"name": "s", "namespace": "a"}, "data": map[string]any{"token": "dG9rZW4="}}}
		if typ != "" {
			u.Object["type"] = typ
		}
		out, err := compact(rules, nil, nil, nil)(u)
		if err != nil {
			t.Fatal(err)
		}
		if kept, _ := rules.KeepObject(secrets, out.(*cached), true, nil); kept != keep {
			t.Errorf("type %q: kept %v, want %v", typ, kept, keep)
		}
	}
}
