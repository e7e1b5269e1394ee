package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/rest"
)

// List GETs the list of gvr in namespace (every namespace when empty) that
// opts select in one request and reads it with ReadList. c is a REST
// client whose paths are absolute, speaking JSON (NewClient).
func List(ctx context.Context, c rest.Interface, gvr schema.GroupVersionResource, namespace, kind string, opts metav1.ListOptions, each func(*unstructured.Unstructured) error) (metav1.ListMeta, error) {
	path := []string{"/api", gvr.Version}
	if gvr.Group != "" {
		path = []string{"/apis", gvr.Group, gvr.Version}
	}
	if namespace != "" {
		path = append(path, "namespaces", namespace)
	}
	path = append(path, gvr.Resource)
	body, err := c.Get().AbsPath(path...).SpecificallyVersionedParams(&opts, metav1.ParameterCodec, metav1.SchemeGroupVersion).Stream(ctx)
	if err != nil {
		return metav1.ListMeta{}, err
	}
	defer body.Close()
	meta, err := ReadList(body, gvr.GroupVersion().String(), kind, each)
	if err != nil {
		return metav1.ListMeta{}, fmt.Errorf("list %s: %w", gvr.GroupResource(), err)
	}
	return meta, nil
}

// ReadList reads a JSON list ({"metadata":{...},"items":[{...},...]}, its
// keys in any order) from r without holding more than one item: each item
// is decoded, given apiVersion and kind when it carries none (as in a
// typed list), and handed to each as it is read. An error from each ends
// the list. It returns the list's metadata.
func ReadList(r io.Reader, apiVersion, kind string, each func(*unstructured.Unstructured) error) (metav1.ListMeta, error) {
	l := listReader{r: r, apiVersion: apiVersion, kind: kind, each: each}
	var meta metav1.ListMeta
	err := l.read(&meta)
	return meta, err
}

// listReader is ReadList's state.
type listReader struct {
	r          io.Reader
	buf        []byte
	off        int
	eof        bool
	seen       map[string]bool // the keys read
	apiVersion string          // of items that carry none, as in typed lists
	kind       string
	each       func(*unstructured.Unstructured) error
}

var (
	errMalformed = errors.New("malformed list")
	// errRepeated is a list naming its items or metadata twice, which
	// the API server never writes and a reader should not guess at.
	errRepeated = errors.New("malformed list: a key repeats")
	// errMetadata is list metadata that is not ListMeta, which the stock
	// decoder reads as far as it can and ReadList refuses.
	errMetadata = errors.New("malformed list metadata")
)

func (l *listReader) read(meta *metav1.ListMeta) error {
	if err := l.expect('{'); err != nil {
		return err
	}
	c, err := l.next()
	for err == nil && c != '}' {
		if c != '"' {
			return errMalformed
		}
		l.off--
		if err := l.field(meta); err != nil {
			return err
		}
		if c, err = l.next(); err == nil && c != '}' {
			if c != ',' {
				return errMalformed
			}
			c, err = l.next()
		}
	}
	return err
}

// field reads one key and its value: the items are handed over, the
// metadata read into meta, anything else skipped.
func (l *listReader) field(meta *metav1.ListMeta) error {
	raw, err := l.value()
	if err != nil {
		return err
	}
	var key string
	if err := utiljson.Unmarshal(raw, &key); err != nil {
		return errMalformed
	}
	if err := l.expect(':'); err != nil {
		return err
	}
	if key == "items" || key == "metadata" {
		if l.seen[key] {
			return errRepeated
		}
		if l.seen == nil {
			l.seen = map[string]bool{}
		}
		l.seen[key] = true
	}
	if key == "items" {
		return l.items()
	}
	if raw, err = l.value(); err != nil {
		return err
	}
	if key == "metadata" {
		if err := utiljson.Unmarshal(raw, meta); err != nil {
			return fmt.Errorf("%w: %w", errMetadata, err)
		}
	}
	return nil
}

// items reads the items array, handing each item over as it is read.
func (l *listReader) items() error {
	c, err := l.next()
	if err != nil {
		return err
	}
	if c == 'n' { // null
		l.off--
		_, err := l.value()
		return err
	}
	if c != '[' {
		return errMalformed
	}
	if c, err = l.next(); err != nil || c == ']' {
		return err
	}
	for {
		l.off--
		if err := l.nextItem(); err != nil {
			return err
		}
		if c, err = l.next(); err != nil || c == ']' {
			return err
		}
		if c != ',' {
			return errMalformed
		}
		if _, err = l.next(); err != nil {
			return err
		}
	}
}

// nextItem reads the item at off. An item that lies whole in the buffer,
// as most do, is decoded where it lies in one pass. One cut short by the
// buffer's end, or one the one-pass decoder declines, is first found whole
// (value, reading on) and then decoded (item).
func (l *listReader) nextItem() error {
	if m, n, ok := decodeObjectPrefix(l.buf[l.off:]); ok {
		l.off += n
		return l.hand(m)
	}
	raw, err := l.value()
	if err != nil {
		return err
	}
	return l.item(raw)
}

// item decodes one item as a watch event's object is decoded and hands it
// over.
func (l *listReader) item(raw []byte) error {
	m, ok := DecodeObject(raw)
	if !ok {
		if err := utiljson.Unmarshal(raw, &m); err != nil {
			return err
		}
		if m == nil {
			return errMalformed
		}
	}
	return l.hand(m)
}

// hand completes a decoded item with the list's type when it carries
// neither kind nor apiVersion (as the stock decoder does: an item with one
// of them is left as it is), and hands it over.
func (l *listReader) hand(m map[string]any) error {
	u := &unstructured.Unstructured{Object: m}
	if u.GetKind() == "" && u.GetAPIVersion() == "" {
		u.SetKind(l.kind)
		u.SetAPIVersion(l.apiVersion)
	}
	return l.each(u)
}

// next returns the next byte that is not white space, and consumes it.
func (l *listReader) next() (byte, error) {
	for {
		for l.off < len(l.buf) {
			c := l.buf[l.off]
			l.off++
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				return c, nil
			}
		}
		if err := l.fill(); err != nil {
			return 0, err
		}
	}
}

func (l *listReader) expect(want byte) error {
	c, err := l.next()
	if err != nil {
		return err
	}
	if c != want {
		return errMalformed
	}
	return nil
}

// fill reads more of the body, keeping the bytes from off on.
func (l *listReader) fill() error {
	if l.eof {
		return io.ErrUnexpectedEOF
	}
	if l.off > 0 {
		n := copy(l.buf, l.buf[l.off:])
		l.buf, l.off = l.buf[:n], 0
	}
	if len(l.buf) == cap(l.buf) {
		l.buf = append(l.buf, make([]byte, max(64<<10, len(l.buf)))...)[:len(l.buf)]
	}
	n, err := l.r.Read(l.buf[len(l.buf):cap(l.buf)])
	l.buf = l.buf[:len(l.buf)+n]
	if errors.Is(err, io.EOF) {
		l.eof = true
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	return err
}

// value returns the bytes of the next JSON value (after white space),
// valid until the next read. It finds where the value ends, counting
// brackets outside strings; the decoders check the rest.
func (l *listReader) value() ([]byte, error) {
	if _, err := l.next(); err != nil {
		return nil, err
	}
	l.off--
	start := l.off
	for {
		if end, ok := valueEnd(l.buf[start:]); ok {
			l.off = start + end
			return l.buf[start:l.off], nil
		}
		l.off = start
		if err := l.fill(); err != nil {
			return nil, err
		}
		start = 0
	}
}

// valueEnd is the length of the JSON value data starts with, if data holds
// all of it. A number or literal ends at the first byte that cannot be in
// one.
func valueEnd(data []byte) (int, bool) {
	if len(data) == 0 {
		return 0, false
	}
	switch data[0] {
	case '{', '[':
		depth, inString := 0, false
		for i := 0; i < len(data); i++ {
			c := data[i]
			if inString {
				switch c {
				case '\\':
					i++
				case '"':
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	case '"':
		for i := 1; i < len(data); i++ {
			switch data[i] {
			case '\\':
				i++
			case '"':
				return i + 1, true
			}
		}
		return 0, false
	default:
		if i := bytes.IndexAny(data, ",}] \t\r\n"); i >= 0 {
			return i, true
		}
		return 0, false
	}
}
