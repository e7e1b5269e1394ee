package wire

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestListReaderMatchesTheStockDecoder reads lists the way the API server
// writes them (a typed list: kind first, items without a kind; an
// unstructured list: keys sorted, items before kind and metadata) one byte
// per read and whole, and compares every item with the stock decoder's.
func TestListReaderMatchesTheStockDecoder(t *testing.T) {
	item := `{"metadata":{"name":"a\"}{[","namespace":"n","resourceVersion":"5"},"data":{"k":"line \"one\"\nline two }]","n":"1"},"binaryData":null}`
	cr := `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"n"},"spec":{"size":3.5,"tags":["a","b"],"big":12345678901234567890}}`
	for name, tc := range map[string]struct {
		body, kind, apiVersion string
		items                  int
		rv                     string
	}{
		"typed":        {`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[` + item + `,` + item + "]}\n", "ConfigMap", "v1", 2, "9"},
		"unstructured": {`{"apiVersion":"example.com/v1","items":[` + cr + `],"kind":"WidgetList","metadata":{"continue":"","resourceVersion":"12"}}`, "Widget", "example.com/v1", 1, "12"},
		"spaced":       {" {\n \"metadata\" : { \"resourceVersion\" : \"3\" } ,\n \"items\" : [ " + item + " , " + item + " ] , \"kind\" : \"ConfigMapList\" , \"apiVersion\" : \"v1\" }\n", "ConfigMap", "v1", 2, "3"},
		"empty":        {`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"4"},"items":[]}`, "ConfigMap", "v1", 0, "4"},
		"null items":   {`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"4"},"items":null}`, "ConfigMap", "v1", 0, "4"},
	} {
		var want unstructured.UnstructuredList
		if err := want.UnmarshalJSON([]byte(tc.body)); err != nil {
			t.Fatalf("%s: stock decoder: %v", name, err)
		}
		// Whole, one byte per read, and in reads that cut items at every
		// other place: an item cut by the buffer's end is read on.
		for _, chunk := range []int{0, 1, 7, 50} {
			var got []*unstructured.Unstructured
			var r io.Reader = strings.NewReader(tc.body)
			if chunk > 0 {
				r = chunkReader{r, chunk}
			}
			meta, err := ReadList(r, tc.apiVersion, tc.kind, func(obj *unstructured.Unstructured) error {
				got = append(got, obj)
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(got) != tc.items || meta.ResourceVersion != tc.rv {
				t.Fatalf("%s: %d items handed over, resourceVersion %q", name, len(got), meta.ResourceVersion)
			}
			for i := range got {
				if !reflect.DeepEqual(got[i].Object, want.Items[i].Object) {
					t.Errorf("%s item %d:\n%#v\nstock %#v", name, i, got[i].Object, want.Items[i].Object)
				}
			}
		}
	}
}

// chunkReader returns at most n bytes per read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func TestListReaderRefusesWhatIsNotAList(t *testing.T) {
	each := func(*unstructured.Unstructured) error { return nil }
	for _, body := range []string{
		``,
		`[]`,
		`{"items":[{"a":1}`,    // cut short
		`{"items":[{"a":1}}`,   // wrong bracket
		`{"items":{"a":1}}`,    // not an array
		`{"items":[1]}`,        // not an object
		`{"items":[{"a":1},]}`, // trailing comma
		`{"metadata":{"resourceVersion":` + `"1"}`, // no end
		`{"items":[{"a":1}] "kind":"X"}`,           // no comma
	} {
		if _, err := ReadList(strings.NewReader(body), "v1", "X", each); err == nil {
			t.Errorf("%q: read as a list", body)
		}
	}
	// An error from each ends the list.
	boom := errors.New("boom")
	if _, err := ReadList(strings.NewReader(`{"items":[{"a":1}]}`), "v1", "X", func(*unstructured.Unstructured) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("error from each: %v", err)
	}
}

// FuzzReadList is the differential test of the list reader: whatever list
// the stock decoder reads, ReadList reads to the same items and version,
// fed in reads of any size (unless a key of the list repeats or its
// metadata is not ListMeta, which it refuses). It never panics on any input.
func FuzzReadList(f *testing.F) {
	item := `{"metadata":{"name":"a","namespace":"n","resourceVersion":"5"},"data":{"k":"line \"one\"\nline two }]"}}`
	for _, seed := range []string{
		`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[` + item + `,` + item + "]}\n",
		`{"apiVersion":"example.com/v1","items":[{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"n":1.5,"t":[1,"x",null,true]}}],"kind":"WidgetList","metadata":{"continue":"","resourceVersion":"12"}}`,
		` { "items" : null , "kind" : "XList" } `,
		`{"kind":"XList","items":[],"metadata":{"resourceVersion":"1"},"items":[{}]}`,
		`{"kind":"XList","items":[{"a":"\ud83d\ude00"}],"other":[{"b":"]"}]}`,
		`{"kind":"XList","items":[{"a":1}`,
	} {
		f.Add([]byte(seed), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		var r io.Reader = bytes.NewReader(body)
		if chunk > 0 {
			r = chunkReader{r, int(chunk)}
		}
		var want unstructured.UnstructuredList
		stockErr := want.UnmarshalJSON(body)
		kind, apiVersion := strings.TrimSuffix(want.GetKind(), "List"), want.GetAPIVersion()
		var got []*unstructured.Unstructured
		meta, err := ReadList(r, apiVersion, kind, func(obj *unstructured.Unstructured) error {
			got = append(got, obj)
			return nil
		})
		if stockErr != nil {
			return // ReadList may read more leniently; it never panics
		}
		if err != nil {
			if errors.Is(err, errRepeated) || errors.Is(err, errMetadata) {
				return
			}
			t.Fatalf("%q: %v; the stock decoder reads %d items", body, err, len(want.Items))
		}
		if len(got) != len(want.Items) || meta.ResourceVersion != want.GetResourceVersion() {
			t.Fatalf("%q: %d items, version %q; stock %d items, version %q", body, len(got), meta.ResourceVersion, len(want.Items), want.GetResourceVersion())
		}
		for i := range got {
			g, w := got[i].Object, want.Items[i].Object
			// The stock decoder gives an item the list's type only when it
			// carries neither field; ReadList fills in whichever is missing.
			if (got[i].GetKind() == "") != (got[i].GetAPIVersion() == "") {
				g, w = maps.Clone(g), maps.Clone(w)
				for _, k := range []string{"kind", "apiVersion"} {
					delete(g, k)
					delete(w, k)
				}
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("%q item %d:\n%#v\nstock %#v", body, i, got[i].Object, want.Items[i].Object)
			}
		}
	})
}
