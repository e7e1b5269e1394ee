package wire

import (
	"encoding/json"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// FuzzDecodeObject is the differential test of the one-pass decoder:
// whatever it decodes, the API machinery's decoder decodes to the same
// tree, and whatever that decoder refuses, it refuses too.
func FuzzDecodeObject(f *testing.F) {
	for _, seed := range []string{
		configMapJSON, `{}`, ` {"a":[]} `, `{"a":{}, "b":[1,-0,0.5,1e3,-2E-2,9223372036854775807,9223372036854775808,-9223372036854775809]}`,
		`{"s":"\u00e9\ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","t":"é","bad":"` + "\xff" + `"}`,
		`{"a":1,"a":2}`, `{"a":true,"b":false,"c":null}`, `{"n":1e400}`, `{"n":01}`, `{"n":1.}`, `{"n":.5}`, `{"n":-}`,
		`{"a":1,}`, `{"a" 1}`, `{"a":[1,]}`, `{"a":tru}`, `{"a":"x` + "\n" + `"}`, `{"a":1} x`, `[1]`, `"s"`, `{"a":"\ud800"}`,
		`{"kind":"List","items":[]}`, `{"a":"\ud83d\ude00\u0041\u00e9\u20ac"}`, `{"a":"\ud83d"}`, `{"a":"\ude00\ud83d"}`,
		`{"a":"\ud83d\u0041"}`, `{"a":"\u12"}`, `{"a":"\x"}`, `{"a":"\ud83d\"}`, `{"a":"x\"}`, `{"a":"\u00zz"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := DecodeObject(data)
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

// TestDecodeObjectTakesObjects: the fast path, not the fallback, takes
// the objects a watch carries.
func TestDecodeObjectTakesObjects(t *testing.T) {
	for _, doc := range []string{configMapJSON, `{"a":"\u00e9 \"x\"","b":[{"c":1.5e3}],"d":-12}`} {
		if _, ok := DecodeObject([]byte(doc)); !ok {
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
			if _, ok := DecodeObject(data); !ok {
				b.Fatal("not decoded")
			}
		}
	})
}

// TestUnescape: the escapes objects hold are unquoted without encoding/json,
// as encoding/json unquotes them.
func TestUnescape(t *testing.T) {
	for _, raw := range []string{`line \"one\"\nline two`, `tab\there\r\n`, `a\/b\\c\b\f`, `\u00e9\u20ac\u0041`, `\ud83d\ude00`} {
		got, ok := unescape([]byte(raw))
		var want string
		if err := json.Unmarshal([]byte(`"`+raw+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if !ok || got != want {
			t.Errorf("unescape(%s) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	for _, raw := range []string{`\ud83d`, `\ude00\ud83d`, `\ud83d\u0041`, `\u12`, `\x`, `x\`} {
		if _, ok := unescape([]byte(raw)); ok {
			t.Errorf("unescape(%s) took what it should leave to encoding/json", raw)
		}
	}
}
