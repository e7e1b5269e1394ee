package watcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"

	"github.com/klauspost/compress/zstd"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
)

// cached is what the informer caches hold for each object: the metadata the
// filters read (names, owner references, labels when a label selector is
// set, the annotations the annotation selector looks at) and the document
// already cleaned and encoded for the store, zstd-compressed at its fastest
// level (YAML of Kubernetes objects shrinks 2-4x). The decoded object is
// dropped as soon as it arrives, so the caches hold a fraction of a tree of
// maps, and a snapshot pass compares hashes without encoding anything.
type cached struct {
	cachedMeta
	packed []byte            // zstd-compressed document
	sum    [sha256.Size]byte // the document's fingerprint (encode.Encoded.Digest)
	keyed  bool              // sum is the keyed digest of an encrypted document
	// emitted and shape are what validate-yaml needs
	// (encode.Encoded.Emitted, encode.Encoded.Shape).
	emitted bool
	shape   uint64
	err     error // the object cannot be stored (encode.ErrInvalid)
}

var _ runtime.Object = (*cached)(nil)

// GetObjectKind: the kind is the informer's; the cache does not repeat it
// for every object.
func (c *cached) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the metadata; the document is never modified and
// is shared.
func (c *cached) DeepCopyObject() runtime.Object {
	out := *c
	out.cachedMeta = c.deepCopy()
	return &out
}

// document renders the stored document; apiVersion is the informer's (the
// API server serves every object of a type at the version it was asked for).
func (c *cached) document(apiVersion string) (object.Document, error) {
	if c.err != nil {
		return object.Document{}, c.err
	}
	body, err := decoder.DecodeAll(c.packed, nil)
	if err != nil {
		return object.Document{}, &encode.InvalidError{Reason: encode.ReasonInvalid, Err: err}
	}
	return object.Document{Body: body, Meta: c.metaOf(apiVersion, body), Emitted: c.emitted, Shape: c.shape}, nil
}

// meta is the metadata the document is stored with. Only an encrypted
// document is decompressed, for the SHA-256 of its ciphertext.
func (c *cached) meta(apiVersion string) (object.Meta, error) {
	var body []byte
	if c.keyed {
		var err error
		if body, err = decoder.DecodeAll(c.packed, nil); err != nil {
			return object.Meta{}, err
		}
	}
	return c.metaOf(apiVersion, body), nil
}

// metaOf is the stored metadata of the document body (read only when
// encrypted).
func (c *cached) metaOf(apiVersion string, body []byte) object.Meta {
	meta := object.Meta{
		ResourceVersion: c.resourceVersion,
		UID:             string(c.uid),
		APIVersion:      apiVersion,
		SHA256:          c.sumHex(),
	}
	if c.keyed {
		meta.SHA256, meta.HMAC = object.Digest(body), c.sumHex()
	}
	return meta
}

// sumHex is the document's fingerprint as the store's metadata spells it.
func (c *cached) sumHex() string { return hex.EncodeToString(c.sum[:]) }

// One encoder and one decoder serve every cache; both are safe for
// concurrent use. Documents are small: a 128 KiB window covers them.
var (
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(128<<10), zstd.WithEncoderConcurrency(2))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderLowmem(true))
)

// scratch holds the buffers compact writes a document and its compressed
// copy into; they are reused for the next object.
type scratch struct{ doc, packed []byte }

var scratchBuffers = sync.Pool{New: func() any { return new(scratch) }}

// maxScratch bounds the buffers kept for reuse: the rare large object does
// not pin its size in every pooled buffer.
const maxScratch = 64 << 10

func (s *scratch) release() {
	if cap(s.doc) > maxScratch || cap(s.packed) > maxScratch {
		return
	}
	s.doc, s.packed = s.doc[:0], s.packed[:0]
	scratchBuffers.Put(s)
}

// compact turns a decoded object into its cached form under rules. It is the
// informers' transform: it runs before an object enters a cache.
func compact(rules filter.Rules, annotationKeys []string, enc *encrypt.Encrypter) func(any) (any, error) {
	keepLabels := rules.SelectsLabels()
	encoding := EncodeOptions(rules, enc)
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // a tombstone, or already compact
		}
		c := &cached{cachedMeta: cachedMeta{
			name:            u.GetName(),
			namespace:       u.GetNamespace(),
			uid:             u.GetUID(),
			resourceVersion: u.GetResourceVersion(),
			owners:          u.GetOwnerReferences(),
		}}
		if keepLabels {
			c.labels = u.GetLabels()
		}
		if len(annotationKeys) > 0 {
			all := u.GetAnnotations()
			for _, k := range annotationKeys {
				if v, ok := all[k]; ok {
					if c.annotations == nil {
						c.annotations = map[string]string{}
					}
					c.annotations[k] = v
				}
			}
		}
		// The decoded object is ours and dropped after this: clean it in
		// place. Everything the filters read was copied out above. Only
		// the compressed document is kept, exactly sized: the document and
		// its compression are written into reused buffers.
		s := scratchBuffers.Get().(*scratch)
		defer s.release()
		enc, err := encoding.EncodeOwnedInto(s.doc, u)
		c.err = err
		if err == nil {
			c.sum, c.keyed, c.emitted, c.shape = enc.Digest, enc.Keyed, enc.Emitted, enc.Shape
			s.doc = enc.Body
			s.packed = encoder.EncodeAll(enc.Body, s.packed[:0])
			c.packed = bytes.Clone(s.packed)
		} else if !errors.Is(c.err, encode.ErrInvalid) {
			c.err = &encode.InvalidError{Reason: encode.ReasonInvalid, Err: c.err}
		}
		return c, nil
	}
}

// EncodeOptions are the rules' keys that shape a document: the caches hold
// each object encoded with them.
func EncodeOptions(r filter.Rules, enc *encrypt.Encrypter) encode.Options {
	return encode.Options{
		Encrypter:            enc,
		IncludeManagedFields: r.IncludeManagedFields,
		IncludeStatus:        r.IncludeStatus,
		MaxSize:              r.MaxResourceSize,
		Validate:             r.ValidateYAML,
	}
}
