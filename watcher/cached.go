package watcher

import (
	"bytes"
	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
)

// cached is what the informer caches hold for each object: the metadata the
// filters read (names, labels, the annotations the selector looks at, owner
// references) and the document already cleaned and encoded for the store.
// The decoded object is dropped as soon as it arrives, so the caches hold
// about the size of the YAML instead of a tree of maps, and a write or a
// snapshot pass needs no encoding.
type cached struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	body []byte
	sum  string
	err  error // the object cannot be stored (filter.ErrInvalid)
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
	return object.Document{Body: c.body, Meta: object.Meta{
		ResourceVersion: c.ResourceVersion,
		UID:             string(c.UID),
		APIVersion:      c.APIVersion,
		SHA256:          c.sum,
	}}, nil
}

// compact turns a decoded object into its cached form under rules. It is the
// informers' transform: it runs before an object enters a cache.
func compact(rules filter.Rules, annotationKeys []string) func(any) (any, error) {
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
				Labels:          u.GetLabels(),
				OwnerReferences: u.GetOwnerReferences(),
			},
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
		body, err := rules.Encode(u)
		// The encoder's buffer has grown by doubling: keep an exact copy,
		// not up to twice the document.
		c.body, c.err = bytes.Clone(body), err
		if c.err == nil {
			c.sum = object.Digest(c.body)
		} else if !errors.Is(c.err, filter.ErrInvalid) {
			c.err = &filter.InvalidError{Reason: filter.ReasonInvalid, Err: c.err}
		}
		return c, nil
	}
}
