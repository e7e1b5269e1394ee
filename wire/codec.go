package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Serializer is ns (the dynamic client's) with leaner JSON decoders for
// watch streams, which carry every object the service backs up. The stock
// decoder reads each event's bytes about nine times: it sniffs the
// envelope's kind, validates and decodes the envelope, then sniffs,
// validates and decodes the object inside it twice over. This one splits
// the envelope without parsing it (lineFramer, envelopeDecoder) and
// decodes the object in one pass (DecodeObject) into the same
// unstructured object. Anything it does not recognise goes to the stock
// decoder.
func Serializer(ns runtime.NegotiatedSerializer) runtime.NegotiatedSerializer {
	return leanJSON{ns}
}

// NewClient is a REST client for dynamic requests at absolute paths
// (List), speaking JSON through Serializer. cfg's rate limits hold it.
func NewClient(cfg *rest.Config) (*rest.RESTClient, error) {
	conf := dynamic.ConfigFor(cfg)
	conf.GroupVersion = nil
	conf.APIPath = "/apis" // every request names its own absolute path
	conf.NegotiatedSerializer = Serializer(conf.NegotiatedSerializer)
	return rest.UnversionedRESTClientFor(conf)
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
		stream.Framer = lineFramer{stream.Framer}
		info.StreamSerializer = &stream
		info.Serializer = objectDecoder{info.Serializer}
		infos[i] = info
	}
	return infos
}

// lineFramer splits a JSON watch stream at its newlines: the API server
// writes each event as one line of compact JSON. The stock framer runs a
// JSON scanner over every byte to find where an object ends, which cost as
// much as decoding the envelope did. A stream whose first line is not one
// JSON object is handed to the stock framer.
type lineFramer struct {
	runtime.Framer
}

func (f lineFramer) NewFrameReader(r io.ReadCloser) io.ReadCloser {
	return &lineFrameReader{r: bufio.NewReaderSize(r, 32<<10), closer: r, stock: f.Framer}
}

// lineFrameReader returns one event per Read, or io.ErrShortBuffer and
// the rest on the next Reads when data is too small for it (as the stock
// framer does).
type lineFrameReader struct {
	r         *bufio.Reader
	closer    io.Closer
	stock     runtime.Framer
	fallback  io.ReadCloser // the stock framer, once a line was not an object
	checked   bool          // the first line was one object
	line      []byte        // holds a line longer than r's buffer
	remaining []byte
}

func (f *lineFrameReader) Read(data []byte) (int, error) {
	if f.fallback != nil {
		return f.fallback.Read(data)
	}
	if len(f.remaining) == 0 {
		frame, err := f.next()
		if err != nil {
			return 0, err
		}
		if !f.checked {
			if frame[0] != '{' || frame[len(frame)-1] != '}' {
				f.fallback = f.stock.NewFrameReader(readCloser{io.MultiReader(bytes.NewReader(bytes.Clone(frame)), f.r), f.closer})
				return f.fallback.Read(data)
			}
			f.checked = true
		}
		f.remaining = frame
	}
	n := copy(data, f.remaining)
	f.remaining = f.remaining[n:]
	if len(f.remaining) > 0 {
		return n, io.ErrShortBuffer
	}
	return n, nil
}

// next reads the next non-blank line, without its line end. It is valid
// until the next call.
func (f *lineFrameReader) next() ([]byte, error) {
	f.line = f.line[:0]
	for {
		chunk, err := f.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			f.line = append(f.line, chunk...)
			continue
		}
		line := chunk
		if len(f.line) > 0 {
			f.line = append(f.line, chunk...)
			line = f.line
		}
		if frame := bytes.TrimSpace(line); len(frame) > 0 {
			return frame, nil // a last line without its newline, too
		}
		if err != nil {
			return nil, err
		}
		f.line = f.line[:0]
	}
}

func (f *lineFrameReader) Close() error { return f.closer.Close() }

type readCloser struct {
	io.Reader
	io.Closer
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
			// raw is the stream's buffer, which the next frame reuses:
			// client-go's watch decoder decodes it before reading on, and
			// the object decoders copy what they keep.
			ev.Object = runtime.RawExtension{Raw: raw}
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
		// One pass over the bytes for an object, as the unstructured
		// scheme would decode it (a list, with "items", is not one).
		if m, ok := DecodeObject(data); ok {
			if _, list := m["items"]; !list {
				obj := &unstructured.Unstructured{Object: m}
				if gvk := obj.GroupVersionKind(); gvk.Kind != "" && !metaKinds.Recognizes(gvk) {
					return obj, &gvk, nil
				}
			}
		}
		obj, gvk, err := unstructured.UnstructuredJSONScheme.Decode(data, nil, nil)
		if err == nil && gvk != nil && !metaKinds.Recognizes(*gvk) {
			if _, isObject := obj.(*unstructured.Unstructured); isObject {
				return obj, gvk, nil
			}
		}
	}
	return d.Serializer.Decode(data, defaults, into)
}
