package watcher

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// FuzzDecodeJSONObject is the differential test of the one-pass decoder:
// whatever it decodes, the API machinery's decoder decodes to the same
// tree, and whatever that decoder refuses, it refuses too.
func FuzzDecodeJSONObject(f *testing.F) {
	for _, seed := range []string{
		configMapJSON, `{}`, ` {"a":[]} `, `{"a":{}, "b":[1,-0,0.5,1e3,-2E-2,9223372036854775807,9223372036854775808,-9223372036854775809]}`,
		`{"s":"\u00e9\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","t":"é","bad":"` + "\xff" + `"}`,
		`{"a":1,"a":2}`, `{"a":true,"b":false,"c":null}`, `{"n":1e400}`, `{"n":01}`, `{"n":1.}`, `{"n":.5}`, `{"n":-}`,
		`{"a":1,}`, `{"a" 1}`, `{"a":[1,]}`, `{"a":tru}`, `{"a":"x` + "\n" + `"}`, `{"a":1} x`, `[1]`, `"s"`, `{"a":"\ud800"}`,
		`{"kind":"List","items":[]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := decodeJSONObject(data)
		want := map[string]any{}
		err := utiljson.Unmarshal(data, &want)
		if !ok {
			return // the stock path decodes it, or says why not
		}
		if err != nil {
			t.Fatalf("decoded %q, which the stock decoder refuses: %v", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q\ndecoded %#v\nstock   %#v", data, got, want)
		}
	})
}

// TestDecodeJSONObjectTakesObjects: the fast path, not the fallback, takes
// the objects a watch carries.
func TestDecodeJSONObjectTakesObjects(t *testing.T) {
	for _, doc := range []string{configMapJSON, `{"a":"\u00e9 \"x\"","b":[{"c":1.5e3}],"d":-12}`} {
		if _, ok := decodeJSONObject([]byte(doc)); !ok {
			t.Errorf("left to the stock decoder: %s", doc)
		}
	}
}

// BenchmarkDecodeObject compares the one-pass decoder with the unstructured
// scheme's decode of the same ConfigMap.
func BenchmarkDecodeObject(b *testing.B) {
	data := []byte(configMapJSON)
	b.Run("stock", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := unstructured.UnstructuredJSONScheme.Decode(data, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-pass", func(b *testing.B) {
		for b.Loop() {
			if _, ok := decodeJSONObject(data); !ok {
				b.Fatal("not decoded")
			}
		}
	})
}
