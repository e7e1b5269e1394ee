package watcher

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
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
			r := listReader{r: strings.NewReader(tc.body), kind: tc.kind, apiVersion: tc.apiVersion, each: func(obj any) (any, error) {
				got = append(got, obj.(*unstructured.Unstructured))
				return obj, nil
			}}
			if chunk > 0 {
				r.r = chunkReader{r.r, chunk}
			}
			list, err := r.read()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(got) != tc.items || len(list.Items) != tc.items || list.ResourceVersion != tc.rv {
				t.Fatalf("%s: %d items handed over, %d listed, resourceVersion %q", name, len(got), len(list.Items), list.ResourceVersion)
			}
			for i := range got {
				if !reflect.DeepEqual(got[i].Object, want.Items[i].Object) {
					t.Errorf("%s item %d:\n%#v\nstock %#v", name, i, got[i].Object, want.Items[i].Object)
				}
				if list.Items[i] != runtime.Object(got[i]) {
					t.Errorf("%s item %d: the list does not hold what each returned", name, i)
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
	each := func(obj any) (any, error) { return obj, nil }
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
		r := listReader{r: strings.NewReader(body), kind: "X", apiVersion: "v1", each: each}
		if _, err := r.read(); err == nil {
			t.Errorf("%q: read as a list", body)
		}
	}
	// An error from each ends the list.
	boom := errors.New("boom")
	r := listReader{r: strings.NewReader(`{"items":[{"a":1}]}`), kind: "X", apiVersion: "v1", each: func(any) (any, error) { return nil, boom }}
	if _, err := r.read(); !errors.Is(err, boom) {
		t.Errorf("error from each: %v", err)
	}
}

// TestListsAreNotRateLimited: an informer's list replaces the streaming
// watch client-go would open, which no client-side limit holds; with many
// types a rate-limited list of each would delay the first backup by
// seconds.
func TestListsAreNotRateLimited(t *testing.T) {
	c, err := NewDynamicClient(&rest.Config{Host: "http://127.0.0.1:1", QPS: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c.lists.GetRateLimiter() != nil {
		t.Error("the informers' lists are rate-limited")
	}
}
