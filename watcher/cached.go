package watcher

import (
	"bytes"
	"errors"

	"github.com/klauspost/compress/s2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
)

// cached is what the informer caches hold for each object: the metadata the
// filters read (names, owner references, labels when a label selector is
// set, the annotations the annotation selector looks at) and the document already cleaned and encoded for the store,
// compressed (S2: YAML of Kubernetes objects shrinks 2-4x, at a few
// microseconds per object). The decoded object is dropped as soon as it
// arrives, so the caches hold a fraction of a tree of maps, and a snapshot
// pass compares hashes without encoding anything.
type cached struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	packed []byte // S2-compressed document
	sum    string // SHA-256 of the document
	err    error  // the object cannot be stored (filter.ErrInvalid)
}

var _ runtime.Object = (*cached)(nil)

// DeepCopyObject copies the metadata; the document is never modified and
// is shared.
func (c *cached) DeepCopyObject() runtime.Object {
	out := *c
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return &out
}

func (c *cached) document() (object.Document, error) {
	if c.err != nil {
		return object.Document{}, c.err
	}
	body, err := s2.Decode(nil, c.packed)
	if err != nil {
		return object.Document{}, &filter.InvalidError{Reason: filter.ReasonInvalid, Err: err}
	}
	return object.Document{Body: body, Meta: object.Meta{
		ResourceVersion: c.ResourceVersion,
		UID:             string(c.UID),
		APIVersion:      c.APIVersion,
		SHA256:          c.sum,
	}}, nil
}

// compact turns a decoded object into its cached form under rules. It is the
// informers' transform: it runs before an object enters a cache.
func compact(rules filter.Rules, annotationKeys []string) func(any) (any, error) {
	keepLabels := rules.LabelSelector != nil
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // a tombstone, or already compact
		}
		c := &cached{
			TypeMeta: metav1.TypeMeta{APIVersion: u.GetAPIVersion(), Kind: u.GetKind()},
			ObjectMeta: metav1.ObjectMeta{
				Name:            u.GetName(),
				Namespace:       u.GetNamespace(),
				UID:             u.GetUID(),
				ResourceVersion: u.GetResourceVersion(),
				OwnerReferences: u.GetOwnerReferences(),
			},
		}
		if keepLabels {
			c.Labels = u.GetLabels()
		}
		if len(annotationKeys) > 0 {
			all := u.GetAnnotations()
			for _, k := range annotationKeys {
				if v, ok := all[k]; ok {
					if c.Annotations == nil {
						c.Annotations = map[string]string{}
					}
					c.Annotations[k] = v
				}
			}
		}
		// The decoded object is ours and dropped after this: clean it in
		// place. Everything the filters read was copied out above.
		body, err := rules.EncodeOwned(u)
		c.err = err
		if err == nil {
			c.sum = object.Digest(body)
			// Exactly sized: the encoder's buffers grow by doubling.
			c.packed = bytes.Clone(s2.Encode(nil, body))
		} else if !errors.Is(c.err, filter.ErrInvalid) {
			c.err = &filter.InvalidError{Reason: filter.ReasonInvalid, Err: c.err}
		}
		return c, nil
	}
}
