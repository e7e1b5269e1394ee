// Package encode turns a Kubernetes object into the document the store
// keeps: cleaned of the fields that change on every write, rendered as YAML
// with sorted keys, held to a size limit, and checked by a round trip before
// it is written. It sits between the watcher, which encodes each object once
// as it enters a cache, and the sink, which writes the documents; its error
// says why an object cannot be stored, and Reason is the one classifier of
// such errors, wherever the object was found.
package encode

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"

	goyaml "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/cluster-backup/cluster-backup/encrypt"
)

// Options are the filtering ConfigMap's keys that shape a document.
type Options struct {
	IncludeManagedFields bool  // include-managed-fields
	IncludeStatus        bool  // include-status
	MaxSize              int64 // max-resource-size in bytes of YAML; 0 is no limit
	Validate             bool  // validate-yaml
	// Encrypter, when set, encrypts every Secret's values
	// (SECRET_ENCRYPTION).
	Encrypter *encrypt.Encrypter
}

// Encoded is an object rendered for the store.
type Encoded struct {
	Body []byte
	// Digest is what change detection compares: the SHA-256 of Body, or,
	// when Keyed, the keyed digest of the plaintext document of an object
	// whose values Body holds encrypted.
	Digest [sha256.Size]byte
	Keyed  bool
	// Emitted says Body was written by the emitter, whose documents read
	// back as the object they were written from: Check accepts it without
	// a parse.
	Emitted bool
	// Shape is the structure Body encodes (see Shape), for a document the
	// emitter left to yaml.v2: Check compares its parse with it.
	Shape uint64
}

// Reasons an object cannot be stored, as logged in data.reason.
const (
	ReasonTooLarge = "too_large"
	ReasonInvalid  = "invalid"
)

// Reason says why err keeps an object out of the store: ReasonTooLarge, or
// ReasonInvalid for every other error.
func Reason(err error) string {
	var inv *InvalidError
	if errors.As(err, &inv) && inv.Reason != "" {
		return inv.Reason
	}
	return ReasonInvalid
}

// Clean returns a copy of obj without the fields that change on every
// write or are rebuilt by the cluster, so that a change of those alone
// encodes to the same bytes.
func (o Options) Clean(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	o.cleanInPlace(out)
	return out
}

func (o Options) cleanInPlace(obj *unstructured.Unstructured) {
	stripVolatile(obj.Object, o.IncludeManagedFields, o.IncludeStatus)
	unstructured.RemoveNestedField(obj.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(obj.Object, "metadata", "selfLink")
}

// stripVolatile removes managedFields and status in place unless kept.
func stripVolatile(obj map[string]any, keepManagedFields, keepStatus bool) {
	if !keepManagedFields {
		unstructured.RemoveNestedField(obj, "metadata", "managedFields")
	}
	if !keepStatus {
		delete(obj, "status")
	}
}

// ErrInvalid marks an object that cannot be stored as it is: too large, or
// not a valid document. Such objects are skipped and counted, or fail the
// pass when skip-invalid-resources is false.
var ErrInvalid = errors.New("invalid object")

// Encode cleans obj and renders it as YAML with sorted keys, so that equal
// objects give equal bytes; a Secret's values are encrypted when an
// Encrypter is set. It enforces max-resource-size on the stored bytes.
// Errors wrap ErrInvalid and carry the reason (ReasonTooLarge or
// ReasonInvalid) in an *InvalidError. Check re-parses a document before it
// is written.
func (o Options) Encode(obj *unstructured.Unstructured) (Encoded, error) {
	return o.EncodeOwned(obj.DeepCopy())
}

// EncodeOwned is Encode for an object the caller owns and no longer needs:
// it is cleaned (and its values encrypted) in place, without a copy.
func (o Options) EncodeOwned(clean *unstructured.Unstructured) (Encoded, error) {
	return o.EncodeOwnedInto(nil, clean)
}

// EncodeOwnedInto is EncodeOwned writing the document into scratch's
// storage when it can (the result's Body may then share it, and is valid
// until scratch is written again). The informers' transform, which keeps
// only each document's compressed copy, encodes every object it sees into
// one reused buffer this way.
func (o Options) EncodeOwnedInto(scratch []byte, clean *unstructured.Unstructured) (Encoded, error) {
	o.cleanInPlace(clean)
	body, emitted, err := marshalYAML(scratch, clean.Object)
	if err != nil {
		return Encoded{}, &InvalidError{Reason: ReasonInvalid, Err: err}
	}
	out := Encoded{Body: body, Emitted: emitted}
	if o.Encrypter != nil && encrypt.Applies(clean.GetAPIVersion(), clean.GetKind()) {
		out.Digest, out.Keyed = o.Encrypter.Digest(body), true
		if err := o.Encrypter.Encrypt(clean.Object); err != nil {
			return Encoded{}, &InvalidError{Reason: ReasonInvalid, Err: err}
		}
		// The digest is taken: the plaintext's storage can be reused.
		if out.Body, out.Emitted, err = marshalYAML(body, clean.Object); err != nil {
			return Encoded{}, &InvalidError{Reason: ReasonInvalid, Err: err}
		}
	} else {
		out.Digest = sha256.Sum256(body)
	}
	if o.Validate && !out.Emitted {
		out.Shape = Shape(clean.Object)
	}
	if o.MaxSize > 0 && int64(len(out.Body)) > o.MaxSize {
		return Encoded{}, &InvalidError{Reason: ReasonTooLarge, Err: fmt.Errorf("%d bytes exceed max-resource-size %d", len(out.Body), o.MaxSize)}
	}
	return out, nil
}

// Check is validate-yaml: it re-parses a document that is about to be
// written and checks that it reads back as the object it was encoded from
// (shape is that object's Encoded.Shape; 0 when unknown, and the document
// must then encode back to itself) and names it. It runs at write time, so
// that documents the store already holds are never parsed again. A
// document the emitter wrote (Encoded.Emitted) reads back as its object by
// construction, which FuzzEmitMatchesYAMLv2 holds it to, and is accepted
// without a parse; so is everything with validate-yaml off.
func (o Options) Check(body []byte, shape uint64, emitted bool, apiVersion, kind, name string) error {
	if !o.Validate || emitted {
		return nil
	}
	if err := validate(body, shape, apiVersion, kind, name); err != nil {
		return &InvalidError{Reason: ReasonInvalid, Err: err}
	}
	return nil
}

// InvalidError says why an object cannot be stored.
type InvalidError struct {
	Reason string
	Err    error
}

func (e *InvalidError) Error() string { return e.Reason + ": " + e.Err.Error() }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func (e *InvalidError) Unwrap() error { return e.Err }

// marshalYAML renders a decoded JSON object as YAML with sorted keys. It
// emits the map directly instead of going through JSON and a YAML parser, as
// sigs.k8s.io/yaml does, for the same output at a fraction of the cost (see
// BenchmarkEncode); strings that YAML would read as another type ("yes",
// "on", "1.0", "") stay quoted.
//
// A map key "<<" is YAML's merge key: written plain, a parser merges its
// value into the enclosing map instead of keeping it as a key. The emitter
// writes it plain, so such keys are renamed to a placeholder that sorts in
// the same place and appears nowhere else in the document, and the
// placeholder is then written back as "<<", quoted.
//
// emitted says the emitter wrote the document (see appendYAML), into
// scratch's storage when it is given.
func marshalYAML(scratch []byte, obj map[string]any) (body []byte, emitted bool, err error) {
	if scratch == nil {
		scratch = make([]byte, 0, 2048)
	}
	if body, ok := appendYAML(scratch[:0], obj); ok {
		return body, true, nil
	}
	body, err = marshalMergeKeys(obj)
	return body, false, err
}

// marshalMergeKeys is marshalYAML's yaml.v2 path, for what the emitter
// leaves to it: merge keys renamed around yaml.v2's Marshal.
func marshalMergeKeys(obj map[string]any) ([]byte, error) {
	var renamed []map[string]any
	collectMergeKeys(obj, &renamed)
	if len(renamed) == 0 {
		return goyaml.Marshal(obj)
	}
	for attempt := uint64(0); attempt < 8; attempt++ {
		placeholder := fmt.Sprintf("<<cluster-backup-%016x", rand.Uint64())
		for _, m := range renamed {
			if v, ok := m["<<"]; ok {
				delete(m, "<<")
				m[placeholder] = v
			}
		}
		body, err := goyaml.Marshal(obj)
		for _, m := range renamed {
			m["<<"] = m[placeholder]
			delete(m, placeholder)
		}
		if err != nil {
			return nil, err
		}
		if bytes.Count(body, []byte(placeholder)) == len(renamed) && bytes.Count(body, []byte(placeholder+":")) == len(renamed) {
			return bytes.ReplaceAll(body, []byte(placeholder+":"), []byte(`"<<":`)), nil
		}
	}
	return nil, errors.New("no placeholder for a merge key is free in this document")
}

// collectMergeKeys appends every map under v that has a "<<" key.
func collectMergeKeys(v any, out *[]map[string]any) {
	switch t := v.(type) {
	case map[string]any:
		if _, ok := t["<<"]; ok {
			*out = append(*out, t)
		}
		for _, e := range t {
			collectMergeKeys(e, out)
		}
	case []any:
		for _, e := range t {
			collectMergeKeys(e, out)
		}
	}
}

// validate re-parses the document, checks that it names the same object,
// and that it reads back as the object it was encoded from: the parse has
// the object's shape, or, with the shape unknown (0), the parse encodes
// back to the same bytes. A parse that changes the structure (a merge key
// merged, a value read as another type) fails either way; comparing shapes
// costs a walk of the parse where encoding it again cost as much as the
// parse itself.
func validate(body []byte, shape uint64, wantAPIVersion, wantKind, wantName string) error {
	var parsed map[string]any
	if err := goyaml.Unmarshal(body, &parsed); err != nil {
		return fmt.Errorf("document does not parse: %w", err)
	}
	if shape != 0 && Shape(parsed) != shape {
		return errors.New("document does not read back as the object it was encoded from")
	}
	if shape == 0 {
		back, ok := stringKeys(parsed).(map[string]any)
		if !ok {
			return errors.New("document is not a map")
		}
		if again, _, err := marshalYAML(nil, back); err != nil || !bytes.Equal(again, body) {
			return errors.New("document does not read back as the object it was encoded from")
		}
	}
	str := func(v any) string { s, _ := v.(string); return s }
	var name string
	switch meta := parsed["metadata"].(type) {
	case map[any]any: // as the parser gives it
		name = str(meta["name"])
	case map[string]any: // after stringKeys
		name = str(meta["name"])
	}
	apiVersion, kind := str(parsed["apiVersion"]), str(parsed["kind"])
	switch {
	case apiVersion == "" || kind == "" || name == "":
		return errors.New("document lacks apiVersion, kind or metadata.name")
	case apiVersion != wantAPIVersion || kind != wantKind || name != wantName:
		return fmt.Errorf("document names %s %s %s, want %s %s %s",
			apiVersion, kind, name, wantAPIVersion, wantKind, wantName)
	}
	return nil
}

// stringKeys turns the parser's map[any]any trees into map[string]any, as
// the encoder gets them; a map with a key that is not a string is left as it
// is (it cannot read back as the JSON object it was encoded from).
func stringKeys(v any) any {
	switch t := v.(type) {
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				return t
			}
			out[ks] = stringKeys(e)
		}
		return out
	case map[string]any:
		for k, e := range t {
			t[k] = stringKeys(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = stringKeys(e)
		}
		return t
	}
	return v
}

// Shape is a structural hash of a decoded document: equal for trees that
// hold the same maps, lists and scalars, whichever decoder made them (JSON
// gives int64 and map[string]any, the YAML parser int and map[any]any) and
// in whatever order their maps iterate. A map with a key that is not a
// string, or a value of a type JSON has not, has a shape no JSON object has.
// The seed is the process's own: shapes are compared within one process.
func Shape(v any) uint64 {
	switch t := v.(type) {
	case nil:
		return mix(0, tagNull)
	case bool:
		if t {
			return mix(1, tagBool)
		}
		return mix(0, tagBool)
	case string:
		return mix(maphash.String(shapeSeed, t), tagString)
	case int:
		return mix(uint64(t), tagInt)
	case int64:
		return mix(uint64(t), tagInt)
	case float64:
		// An integral float encodes as an integer and parses back as one.
		if t == math.Trunc(t) && math.Abs(t) < 1<<63 {
			return mix(uint64(int64(t)), tagInt)
		}
		return mix(math.Float64bits(t), tagFloat)
	case []any:
		h := mix(uint64(len(t)), tagList)
		for _, e := range t {
			h = mix(h, Shape(e))
		}
		return h
	case map[string]any:
		var sum uint64
		for k, e := range t {
			sum += mix(maphash.String(shapeSeed, k), Shape(e))
		}
		return mix(sum+uint64(len(t)), tagMap)
	case map[any]any:
		var sum uint64
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				return tagForeign
			}
			sum += mix(maphash.String(shapeSeed, ks), Shape(e))
		}
		return mix(sum+uint64(len(t)), tagMap)
	}
	return tagForeign
}

var shapeSeed = maphash.MakeSeed()

// The type tags of Shape.
const (
	tagNull uint64 = iota + 0x51ab_0000_0000_0001
	tagBool
	tagString
	tagInt
	tagFloat
	tagList
	tagMap
	tagForeign
)

// mix combines two 64-bit values into one, well spread (splitmix64's
// finaliser over a's combination with b).
func mix(a, b uint64) uint64 {
	x := a ^ (b + 0x9e3779b97f4a7c15 + a<<6 + a>>2)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
