package watcher

import (
	"bytes"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// NewDynamicClient is dynamic.NewForConfig with a leaner JSON decoder for
// watch streams, which carry every object the service backs up. The stock
// decoder reads each event's bytes about nine times: it sniffs the envelope's
// kind, validates and decodes the envelope, then sniffs, validates and
// decodes the object inside it twice over. This one splits the envelope
// without parsing it and decodes the object once (validated, then decoded),
// into the same unstructured object. Anything it does not recognise goes to
// the stock decoder.
func NewDynamicClient(cfg *rest.Config) (*dynamic.DynamicClient, error) {
	conf := dynamic.ConfigFor(cfg)
	conf.GroupVersion = nil
	conf.APIPath = "/apis" // every request names its own absolute path
	conf.NegotiatedSerializer = leanJSON{conf.NegotiatedSerializer}
	rc, err := rest.UnversionedRESTClientFor(conf)
	if err != nil {
		return nil, err
	}
	return dynamic.New(rc), nil
}

// leanJSON replaces the JSON decoders of the dynamic client's serializer.
type leanJSON struct {
	runtime.NegotiatedSerializer
}

func (s leanJSON) SupportedMediaTypes() []runtime.SerializerInfo {
	infos := slices.Clone(s.NegotiatedSerializer.SupportedMediaTypes())
	for i, info := range infos {
		if info.MediaType != runtime.ContentTypeJSON || info.StreamSerializer == nil {
			continue
		}
		stream := *info.StreamSerializer
		stream.Serializer = envelopeDecoder{stream.Serializer}
		info.StreamSerializer = &stream
		info.Serializer = objectDecoder{info.Serializer}
		infos[i] = info
	}
	return infos
}

var watchEventKind = metav1.SchemeGroupVersion.WithKind("WatchEvent")

// envelopeDecoder decodes the frames of a watch stream into WatchEvents.
type envelopeDecoder struct {
	runtime.Serializer
}

func (d envelopeDecoder) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if ev, ok := into.(*metav1.WatchEvent); ok {
		if typ, raw, ok := splitEnvelope(data); ok {
			ev.Type = typ
			// The stream reuses its buffer for the next frame.
			ev.Object = runtime.RawExtension{Raw: bytes.Clone(raw)}
			return ev, &watchEventKind, nil
		}
	}
	return d.Serializer.Decode(data, defaults, into)
}

// splitEnvelope takes apart {"type":"ADDED","object":{...}}, exactly as the
// API server writes it. ok is false for anything else.
func splitEnvelope(data []byte) (typ string, object []byte, ok bool) {
	data = bytes.TrimSpace(data)
	rest, found := bytes.CutPrefix(data, []byte(`{"type":"`))
	if !found {
		return "", nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", nil, false
	}
	switch t := string(rest[:end]); t {
	case "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR":
		typ = t
	default:
		return "", nil, false
	}
	object, found = bytes.CutPrefix(rest[end:], []byte(`","object":`))
	if !found {
		return "", nil, false
	}
	object, found = bytes.CutSuffix(object, []byte("}"))
	object = bytes.TrimSpace(object)
	// A further field after the object would leave it not ending in '}'.
	if !found || len(object) < 2 || object[0] != '{' || object[len(object)-1] != '}' {
		return "", nil, false
	}
	return typ, object, true
}

// metaKinds are the kinds the dynamic client decodes into typed objects
// (Status above all, which carries watch errors); those keep the stock path.
var metaKinds = func() *runtime.Scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

// objectDecoder decodes the objects inside watch events.
type objectDecoder struct {
	runtime.Serializer
}

func (d objectDecoder) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if into == nil && defaults == nil {
		obj, gvk, err := unstructured.UnstructuredJSONScheme.Decode(data, nil, nil)
		if err == nil && gvk != nil && !metaKinds.Recognizes(*gvk) {
			if _, isObject := obj.(*unstructured.Unstructured); isObject {
				return obj, gvk, nil
			}
		}
	}
	return d.Serializer.Decode(data, defaults, into)
}
