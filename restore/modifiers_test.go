package restore

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func objectOf(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	return &u
}

func mustModifiers(t *testing.T, doc string) *Modifiers {
	t.Helper()
	m, err := LoadModifiers([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const pvc = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mysql-data, namespace: bar, labels: {foo: bar, test: x}}
spec: {storageClassName: standard, accessModes: [ReadWriteOnce]}
`

const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {note: old, keep: kept}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: docker.io/library/nginx:1.25}
      - {name: sidecar, image: docker.io/library/busybox:1.36}
`

// The examples of Velero's documentation, unchanged.
func TestModifiersVeleroExamples(t *testing.T) {
	for _, tc := range []struct {
		name, rules, object, segment string
		check                        func(t *testing.T, u *unstructured.Unstructured)
	}{{
		name: "change a storage class, drop a label", segment: "persistentvolumeclaims", object: pvc,
		rules: `version: v1
resourceModifierRules:
- conditions:
     groupResource: persistentvolumeclaims
     resourceNameRegex: "^mysql.*$"
     namespaces:
     - bar
     - foo
     labelSelector:
        matchLabels:
           foo: bar
  patches:
  - operation: replace
    path: "/spec/storageClassName"
    value: "premium"
  - operation: remove
    path: "/metadata/labels/test"
`,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if sc, _, _ := unstructured.NestedString(u.Object, "spec", "storageClassName"); sc != "premium" {
				t.Errorf("storageClassName %q", sc)
			}
			if _, ok := u.GetLabels()["test"]; ok {
				t.Error("label test kept")
			}
		},
	}, {
		name: "only when the class is the old one (matches)", segment: "persistentvolumeclaims", object: pvc,
		rules: `version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims
    matches:
    - path: "/spec/storageClassName"
      value: "standard"
  patches:
  - operation: replace
    path: "/spec/storageClassName"
    value: "premium"
`,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if sc, _, _ := unstructured.NestedString(u.Object, "spec", "storageClassName"); sc != "premium" {
				t.Errorf("storageClassName %q", sc)
			}
		},
	}, {
		name: "scale to zero (the layout spells apps types without their group)", segment: "deployments", object: webDeployment,
		rules: `version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    namespaces: [shop]
  patches:
  - operation: replace
    path: "/spec/replicas"
    value: "0"
`,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if n, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); n != 0 {
				t.Errorf("replicas %d", n)
			}
		},
	}, {
		name: "drop an annotation (merge patch)", segment: "deployments.apps", object: webDeployment,
		rules: `version: v1
resourceModifierRules:
- conditions:
    groupResource: "*.apps"
    resourceNameRegex: "^web$"
  mergePatches:
  - patchData: |
      {
        "metadata": {
          "annotations": {
            "note": null
          }
        }
      }
`,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			if a := u.GetAnnotations(); a["note"] != "" || a["keep"] != "kept" {
				t.Errorf("annotations %v", a)
			}
		},
	}, {
		name: "rewrite an image registry (strategic merge patch, by container name)", segment: "deployments.apps", object: webDeployment,
		rules: `version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
  strategicPatches:
  - patchData: |
      spec:
        template:
          spec:
            containers:
            - name: nginx
              image: registry.internal/library/nginx:1.25
`,
		check: func(t *testing.T, u *unstructured.Unstructured) {
			cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			if len(cs) != 2 {
				t.Fatalf("%d containers: a strategic patch merges by name, it does not replace the list", len(cs))
			}
			if img := cs[0].(map[string]any)["image"]; img != "registry.internal/library/nginx:1.25" {
				t.Errorf("nginx image %v", img)
			}
			if img := cs[1].(map[string]any)["image"]; img != "docker.io/library/busybox:1.36" {
				t.Errorf("sidecar image %v", img)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustModifiers(t, tc.rules)
			u := objectOf(t, tc.object)
			n, err := m.Apply(u, tc.segment)
			if err != nil || n != 1 {
				t.Fatalf("applied %d rules: %v", n, err)
			}
			tc.check(t, u)
		})
	}
}

func TestModifiersConditions(t *testing.T) {
	rules := func(cond string) *Modifiers {
		return mustModifiers(t, "version: v1\nresourceModifierRules:\n- conditions:\n"+cond+"  patches:\n  - {operation: replace, path: /spec/storageClassName, value: premium}\n")
	}
	for _, tc := range []struct {
		name, cond, segment string
		want                int
	}{
		{"another type", "    groupResource: configmaps\n", "persistentvolumeclaims", 0},
		{"a glob that does not cross a dot", "    groupResource: \"*\"\n", "deployments.apps", 0},
		{"a glob across segments", "    groupResource: \"**\"\n", "persistentvolumeclaims", 1},
		{"another namespace", "    groupResource: persistentvolumeclaims\n    namespaces: [foo]\n", "persistentvolumeclaims", 0},
		{"a name that does not match", "    groupResource: persistentvolumeclaims\n    resourceNameRegex: ^web\n", "persistentvolumeclaims", 0},
		{"a label that does not match", "    groupResource: persistentvolumeclaims\n    labelSelector: {matchLabels: {foo: baz}}\n", "persistentvolumeclaims", 0},
		{"a match that fails", "    groupResource: persistentvolumeclaims\n    matches: [{path: /spec/storageClassName, value: gold}]\n", "persistentvolumeclaims", 0},
		{"a match on a missing path", "    groupResource: persistentvolumeclaims\n    matches: [{path: /spec/volumeName, value: x}]\n", "persistentvolumeclaims", 0},
	} {
		u := objectOf(t, pvc)
		n, err := rules(tc.cond).Apply(u, tc.segment)
		if err != nil || n != tc.want {
			t.Errorf("%s: applied %d (%v), want %d", tc.name, n, err, tc.want)
		}
	}
}

// Conditions are judged on the object as stored: a rule does not match
// because an earlier rule changed the object.
func TestModifiersJudgeTheStoredObject(t *testing.T) {
	m := mustModifiers(t, `version: v1
resourceModifierRules:
- conditions: {groupResource: persistentvolumeclaims}
  patches: [{operation: replace, path: /metadata/labels/foo, value: changed}]
- conditions: {groupResource: persistentvolumeclaims, labelSelector: {matchLabels: {foo: bar}}}
  patches: [{operation: replace, path: /spec/storageClassName, value: premium}]
`)
	u := objectOf(t, pvc)
	if n, err := m.Apply(u, "persistentvolumeclaims"); err != nil || n != 2 {
		t.Fatalf("applied %d: %v", n, err)
	}
	if sc, _, _ := unstructured.NestedString(u.Object, "spec", "storageClassName"); sc != "premium" || u.GetLabels()["foo"] != "changed" {
		t.Errorf("class %q, label %q", sc, u.GetLabels()["foo"])
	}
}

// A rule that cannot apply is an error for that object, which is left as
// it was; a failed test operation is not an error.
func TestModifiersFailures(t *testing.T) {
	u := objectOf(t, pvc)
	m := mustModifiers(t, `version: v1
resourceModifierRules:
- conditions: {groupResource: persistentvolumeclaims}
  patches: [{operation: replace, path: /spec/does/not/exist, value: x}]
`)
	if _, err := m.Apply(u, "persistentvolumeclaims"); err == nil || !strings.Contains(err.Error(), "rule 0") {
		t.Errorf("a replace of a missing path: %v", err)
	}
	if sc, _, _ := unstructured.NestedString(u.Object, "spec", "storageClassName"); sc != "standard" {
		t.Errorf("the object changed although its rule failed: %q", sc)
	}
	test := mustModifiers(t, `version: v1
resourceModifierRules:
- conditions: {groupResource: persistentvolumeclaims}
  patches:
  - {operation: test, path: /spec/storageClassName, value: gold}
  - {operation: replace, path: /spec/storageClassName, value: premium}
`)
	if _, err := test.Apply(u, "persistentvolumeclaims"); err != nil {
		t.Errorf("a failed test operation: %v", err)
	}
	if sc, _, _ := unstructured.NestedString(u.Object, "spec", "storageClassName"); sc != "standard" {
		t.Errorf("patched after a failed test: %q", sc)
	}
	cr := objectOf(t, "apiVersion: example.io/v1\nkind: Widget\nmetadata: {name: w, namespace: bar}\nspec: {size: 1}\n")
	sp := mustModifiers(t, "version: v1\nresourceModifierRules:\n- conditions: {groupResource: widgets.example.io}\n  strategicPatches: [{patchData: '{\"spec\": {\"size\": 2}}'}]\n")
	if _, err := sp.Apply(cr, "widgets.example.io"); err == nil || !strings.Contains(err.Error(), "mergePatches") {
		t.Errorf("a strategic patch of a custom resource: %v", err)
	}
}

func TestLoadModifiersErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"version: v2\nresourceModifierRules: []\n", `version "v2"`},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n", "resourceModifierRules[0]: no patches"},
		{"version: v1\nresourceModifierRules:\n- conditions: {}\n  patches: [{operation: remove, path: /a}]\n", "groupResource is required"},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, resourceNameRegex: '('}\n  patches: [{operation: remove, path: /a}]\n", "resourceNameRegex"},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: delete, path: /a}]\n", `patches[0].operation "delete"`},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: add, path: /a, value: '{bad'}]\n", "not JSON"},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patchez: []\n", "patchez"},
		{"version: v1\nresourceModifierRules:\n- conditions: {groupResource: 'a{b'}\n  patches: [{operation: remove, path: /a}]\n", "unbalanced"},
	} {
		if _, err := LoadModifiers([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.doc, err, tc.want)
		}
	}
}

func TestPatchValue(t *testing.T) {
	for in, want := range map[string]any{`"true"`: "true", "true": true, "null": nil, "premium": "premium", `"3"`: "3"} {
		if got, err := patchValue(in); err != nil || got != want {
			t.Errorf("%s: %#v (%v), want %#v", in, got, err, want)
		}
	}
}
