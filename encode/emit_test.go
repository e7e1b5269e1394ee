package encode

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	goyaml "go.yaml.in/yaml/v2"
	sigsyaml "sigs.k8s.io/yaml"
)

// decodeJSON decodes as the API machinery does: integers as int64, other
// numbers as float64.
func decodeJSON(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = numbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = numbers(e)
		}
	}
	return v
}

// checkEmit fails when appendYAML writes obj otherwise than yaml.v2 does,
// or writes a document that does not read back as obj (validate-yaml
// accepts the emitter's documents without parsing them); it returns
// whether appendYAML wrote it.
func checkEmit(t *testing.T, obj map[string]any) bool {
	t.Helper()
	want, err := goyaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := appendYAML(nil, obj)
	if !ok {
		return false
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendYAML differs from yaml.v2:\n--- yaml.v2\n%s\n--- appendYAML\n%s", want, got)
	}
	var parsed map[string]any
	if err := goyaml.Unmarshal(got, &parsed); err != nil || Shape(parsed) != Shape(obj) {
		t.Fatalf("the emitter's document does not read back as its object (%v):\n%s", err, got)
	}
	return true
}

// FuzzEmitMatchesYAMLv2 is the differential test of the emitter: whatever
// it writes is byte for byte what yaml.v2 writes, and reads back as the
// object it was written from.
func FuzzEmitMatchesYAMLv2(f *testing.F) {
	for _, seed := range []string{
		`{"a":"b"}`, `{"a10":1,"a2":2,"a":{"b":[1,"x",{"c":null}]},"B":true,"_":false,"0":1.5}`,
		`["yes","on","","1.0","0x1F","~",null,"y","Y","NULL","<<","+.inf",".5","-.inf",".nan"]`,
		`{"k":"line\nline","t":"a\nb\n","u":"a\n\nb","v":"a\n\n","w":"\nlead","x":" lead\nb","y":"trail \nb","z":"a\n b"}`,
		`["2001-12-14","2001-12-14t21:59:43.10-05:00","1:20","-1:20.5","0b101","-0b11","1_000","+1","-1","0o17","1e3","1E+3","0.","+.5"]`,
		`["a: b","a:b","a:","a #b","a#b","#a","- a","-a","-","? a","?a",":a",": a","'q'","\"dq\"","a'b","---x","...x","--x","a b"," a","a ","!x","&x","*x","|x",">x","%x","@x","` + "`x" + `",",x","[x","]x","{x","}x"]`,
		`{"":"","a b":"c","a: b":"c","-":"-","'":"'","yes":"no","1":"2","<<x":"y"}`,
		`[[],{},[[1,[2]],{"a":[]}],{"a":{},"b":[{"c":[3]}]}]`,
		`{"n":12345678901234567890,"f":1e300,"g":-0.0,"h":1e21,"i":-9223372036854775808,"j":0.1}`,
		`"\u00e9\ud83d\ude00"`, `"tab\there"`, `"back\\slash"`, `"quote\"d"`, `"cr\r\nlf"`,
		`{"` + string(bytes.Repeat([]byte("k"), 129)) + `":"long key"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeJSON(data)
		if err != nil {
			return
		}
		checkEmit(t, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x"}, "data": v})
		if m, ok := v.(map[string]any); ok {
			checkEmit(t, m)
		}
	})
}

// TestEmitWritesRealObjects: the emitter takes the documents objects make
// (not only falling back to yaml.v2), and writes them as yaml.v2 does.
func TestEmitWritesRealObjects(t *testing.T) {
	objs := []map[string]any{sampleObject().Object}
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		j, err := sigsyaml.YAMLToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		v, err := decodeJSON(j)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, v.(map[string]any))
	}
	for i, obj := range objs {
		if !checkEmit(t, obj) {
			t.Errorf("object %d: the emitter left an ordinary object to yaml.v2", i)
		}
	}
}

// BenchmarkEmit compares the emitter with yaml.v2 on a stored ConfigMap.
func BenchmarkEmit(b *testing.B) {
	obj := defaults().Clean(sampleObject()).Object
	b.Run("appendYAML", func(b *testing.B) {
		for b.Loop() {
			if _, ok := appendYAML(nil, obj); !ok {
				b.Fatal("not emitted")
			}
		}
	})
	b.Run("yaml.v2", func(b *testing.B) {
		for b.Loop() {
			if _, err := goyaml.Marshal(obj); err != nil {
				b.Fatal(err)
			}
		}
	})
}
