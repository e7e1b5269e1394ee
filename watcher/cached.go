package watcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
)

// cached is what the informer caches hold for each object: the metadata the
// filters read (names, owner references, labels when a label selector is
// set, the annotations the annotation selector looks at) and the document
// already cleaned and encoded for the store, compressed (pack.Frame: YAML
// of Kubernetes objects shrinks 2-4x, and further against a dictionary of
// its type). The decoded object is dropped as soon as it arrives, so the
// caches hold a fraction of a tree of maps, and a snapshot pass compares
// hashes without encoding anything.
type cached struct {
	cachedMeta
	packed pack.Frame        // the compressed document
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
	body, err := c.packed.Decompress()
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
		if body, err = c.packed.Decompress(); err != nil {
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
		Manager:         c.manager.Value(),
	}
	if c.keyed {
		meta.SHA256, meta.HMAC = object.Digest(body), c.sumHex()
	}
	return meta
}

// sumHex is the document's fingerprint as the store's metadata spells it.
func (c *cached) sumHex() string { return hex.EncodeToString(c.sum[:]) }

// dictionary is the compression dictionary of one informer's documents,
// made of the dictAfter-th document it compacts: a type with fewer objects
// costs no dictionary (one takes up to 48 KiB). It never changes once made,
// and every document compressed after that uses it. Encrypted documents
// neither use nor make one: ciphertext has nothing in common with other
// ciphertext.
type dictionary struct {
	seen atomic.Int64
	dict atomic.Pointer[pack.Dict]
}

const dictAfter = 64

func (d *dictionary) of(doc []byte, encrypted bool) *pack.Dict {
	if d == nil || encrypted {
		return nil
	}
	if dict := d.dict.Load(); dict != nil {
		return dict
	}
	if d.seen.Add(1) >= dictAfter {
		d.dict.CompareAndSwap(nil, pack.NewDict(doc))
	}
	return d.dict.Load()
}

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

// compact turns a decoded object into its cached form under rules,
// compressing documents against dict's dictionary (nil: each on its own).
// It is the informers' transform: it runs before an object enters a cache.
func compact(rules filter.Rules, annotationKeys []string, enc *encrypt.Encrypter, dict *dictionary) func(any) (any, error) {
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
			saToken:         u.GetKind() == "Secret" && filter.SecretType(u) == filter.ServiceAccountTokenType,
			manager:         lastManager(u.GetManagedFields()),
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
			frame := pack.Compress(s.packed, enc.Body, dict.of(enc.Body, enc.Keyed))
			s.packed = frame.Bytes
			c.packed = pack.Frame{Bytes: bytes.Clone(frame.Bytes), Dict: frame.Dict}
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
