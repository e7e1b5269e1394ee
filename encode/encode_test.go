package encode

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"filippo.io/age"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/encrypt"
)

// defaults are the options of the default filtering ConfigMap.
func defaults() Options { return Options{Validate: true} }

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&InvalidError{Reason: ReasonTooLarge, Err: errors.New("big")}, ReasonTooLarge},
		{&InvalidError{Reason: ReasonInvalid, Err: errors.New("bad")}, ReasonInvalid},
		{errors.New("anything else"), ReasonInvalid},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %s, want %s", tc.err, got, tc.want)
		}
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
		name    string
		options func(*Options)
	}{
		{"default", nil},
		{"with-status-and-managed-fields", func(o *Options) { o.IncludeStatus = true; o.IncludeManagedFields = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := defaults()
			if tc.options != nil {
				tc.options(&r)
			}
			body, err := bodyOf(r, sampleObject())
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
	r := defaults()
	a, err := bodyOf(r, sampleObject())
	if err != nil {
		t.Fatal(err)
	}
	changed := sampleObject()
	changed.SetResourceVersion("99999")
	changed.Object["status"] = map[string]any{"phase": "Failed"}
	changed.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "other"}})
	b, err := bodyOf(r, changed)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("a change of resourceVersion, status and managedFields changed the bytes")
	}
	orig := sampleObject()
	if _, err := bodyOf(r, orig); err != nil || orig.GetResourceVersion() != "12345" {
		t.Error("Encode modified its input")
	}
}

func TestEncodeLimits(t *testing.T) {
	r := defaults()
	r.MaxSize = 100
	_, err := bodyOf(r, sampleObject())
	var inv *InvalidError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &inv) || inv.Reason != ReasonTooLarge {
		t.Errorf("want too_large, got %v", err)
	}
}

func TestCheck(t *testing.T) {
	r := defaults()
	obj := sampleObject()
	enc, err := r.Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	body := enc.Body
	// The emitter wrote it: it reads back as the object by construction
	// (FuzzEmitMatchesYAMLv2), and no shape is computed for it.
	if !enc.Emitted || enc.Shape != 0 {
		t.Fatalf("an ordinary object: emitted %v, shape %x; want emitted and no shape", enc.Emitted, enc.Shape)
	}
	shape := Shape(r.Clean(obj).Object)
	for _, shape := range []uint64{shape, 0} {
		if err := r.Check(body, shape, false, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
			t.Errorf("a good document failed the check (shape %x): %v", shape, err)
		}
	}
	// A document the emitter leaves to yaml.v2 carries its shape.
	accented := sampleObject()
	accented.Object["data"] = map[string]any{"greeting": "h\u00e9llo"}
	acc, err := r.Encode(accented)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Emitted || acc.Shape == 0 {
		t.Fatalf("non-ASCII text: emitted %v, shape %x; want yaml.v2 and a shape", acc.Emitted, acc.Shape)
	}
	if err := r.Check(acc.Body, acc.Shape, false, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
		t.Errorf("a good yaml.v2 document failed the check: %v", err)
	}
	other := sampleObject()
	other.Object["data"] = map[string]any{"other": "value"}
	otherBody, err := bodyOf(r, other)
	if err != nil {
		t.Fatal(err)
	}
	var inv *InvalidError
	if err := r.Check(otherBody, shape, false, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); !errors.As(err, &inv) {
		t.Errorf("a document that is not the encoded object passed the check")
	}
	nameless := sampleObject()
	unstructured.RemoveNestedField(nameless.Object, "metadata", "name")
	namelessBody, err := bodyOf(r, nameless)
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
		if err := r.Check(tc.body, 0, false, tc.apiVersion, tc.kind, tc.objName); !errors.As(err, &inv) || inv.Reason != ReasonInvalid {
			t.Errorf("%s: want invalid, got %v", tc.name, err)
		}
	}
	r.Validate = false
	if err := r.Check([]byte("a: [b"), 1, false, "v1", "ConfigMap", "x"); err != nil {
		t.Errorf("validate-yaml false still validated: %v", err)
	}
}

// FuzzSelectors checks that the annotation selector and resource matching
// never panic and that a dotted entry only ever matches its own group.
func TestEncodeMatchesSigsYAML(t *testing.T) {
	obj := sampleObject()
	obj.Object["spec"] = map[string]any{
		"replicas": int64(3), "ratio": 0.25, "big": int64(1) << 53, "enabled": true, "none": nil,
		"list":   []any{"a", int64(1), map[string]any{"z": "last", "a": "first"}},
		"empty":  map[string]any{},
		"emptyL": []any{},
		"quoted": []any{"yes", "no", "on", "off", "true", "1", "1.5", "~", "null", "", " lead", "a: b", "#c", "- d", "0x1F", "1e3", ".inf"},
	}
	clean := defaults().Clean(obj)
	got, _, err := marshalYAML(nil, clean.Object)
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
	obj := defaults().Clean(sampleObject()).Object
	b.Run("baseline-sigs-yaml", func(b *testing.B) {
		for b.Loop() {
			if _, err := sigsyaml.Marshal(obj); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := marshalYAML(nil, obj); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCheck is validate-yaml's cost per written document that the
// emitter left to yaml.v2: with the shape the encoder recorded, and
// without (the document must encode back to itself).
func BenchmarkCheck(b *testing.B) {
	r := defaults()
	obj := sampleObject()
	enc, err := r.Encode(obj)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		shape uint64
	}{{"shape", Shape(r.Clean(obj).Object)}, {"re-encode", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := r.Check(enc.Body, bc.shape, false, obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
					b.Fatal(err)
				}
			}
		})
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
	r := defaults()
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
	enc, err := r.Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	body := enc.Body
	if err := r.Check(body, enc.Shape, enc.Emitted, "example.com/v1", "Widget", "w"); err != nil {
		t.Fatalf("check: %v\n%s", err, body)
	}
	want := r.Clean(obj).Object
	if got := roundTrip(t, body); !jsonEqual(t, got, want) {
		t.Errorf("round trip changed the object:\n%s", body)
	}
	// A plain << written by hand reads back merged: validate-yaml rejects it.
	merged := []byte("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  <<:\n    replicas: 1\n  image: x\n")
	var inv *InvalidError
	for _, shape := range []uint64{enc.Shape, 0} {
		if err := r.Check(merged, shape, false, "example.com/v1", "Widget", "w"); !errors.As(err, &inv) {
			t.Errorf("a document that reads back merged passed validate-yaml (shape %x)", shape)
		}
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
	r := defaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}, "data": v,
		}}
		want := r.Clean(obj).Object
		enc, err := r.Encode(obj)
		body := enc.Body
		if err == nil {
			// The check against the encoded shape accepts whatever
			// encoding the parse again accepts (and what it accepts reads
			// back as the object, below; it also takes -0, which reads
			// back as 0, equal in JSON).
			err = r.Check(body, enc.Shape, enc.Emitted, "v1", "ConfigMap", "x")
			if again := r.Check(body, 0, false, "v1", "ConfigMap", "x"); again == nil && err != nil {
				t.Fatalf("the shape check says %v where encoding again accepts:\n%s", err, body)
			}
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

// bodyOf is the stored bytes of obj under o.
func bodyOf(o Options, obj *unstructured.Unstructured) ([]byte, error) {
	enc, err := o.Encode(obj)
	return enc.Body, err
}

func TestEncodeEncryptsSecretsOnly(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := encrypt.New(id.Recipient().String(), []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Encrypter: enc}
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "db", "namespace": "payments", "resourceVersion": "1"},
		"data":     map[string]any{"password": "aHVudGVyMg=="},
	}}
	a, err := o.Encode(secret)
	if err != nil {
		t.Fatal(err)
	}
	secret.SetResourceVersion("2") // not part of the document
	b, err := o.Encode(secret)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !a.Keyed:
		t.Error("a Secret's digest is not keyed")
	case bytes.Contains(a.Body, []byte("aHVudGVyMg==")):
		t.Errorf("the value is stored in the clear:\n%s", a.Body)
	case !bytes.Contains(a.Body, []byte(encrypt.Annotation)):
		t.Errorf("the document does not say how it is encrypted:\n%s", a.Body)
	case bytes.Equal(a.Body, b.Body):
		t.Error("two encryptions gave the same bytes: not randomised")
	case a.Digest != b.Digest:
		t.Error("an unchanged Secret changed its digest: it would be written again")
	case a.Digest == sha256.Sum256(a.Body):
		t.Error("the digest is a plain hash of the stored bytes")
	}
	plain, err := Options{}.Encode(secret)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest == plain.Digest || a.Digest == sha256.Sum256(plain.Body) {
		t.Error("the keyed digest equals the plaintext's SHA-256")
	}
	cm, err := o.Encode(sampleObject())
	if err != nil || cm.Keyed || cm.Digest != sha256.Sum256(cm.Body) {
		t.Errorf("a ConfigMap: keyed %v, %v", cm.Keyed, err)
	}
}
