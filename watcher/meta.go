package watcher

import (
	"maps"
	"net/url"
	"time"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cluster-backup/cluster-backup/filter"
)

// cachedMeta is the part of an object's metadata the caches keep: what the
// informers key and index by, and what the filters read (labels and
// annotations only when a selector reads them). It is the metav1.Object the
// informers need at half the size of a metav1.ObjectMeta, which would be
// held for every object of the cluster: the fields it does not keep read as
// empty, and setting them does nothing.
type cachedMeta struct {
	name, namespace, resourceVersion string
	uid                              types.UID
	labels, annotations              map[string]string
	owners                           []metav1.OwnerReference
	// saToken marks a Secret of type kubernetes.io/service-account-token,
	// which the filters read (SecretType).
	saToken bool
	// manager is the field manager of the object's last change
	// (lastManager), interned: a cluster has few of them, and a handle
	// costs each object 8 bytes.
	manager unique.Handle[string]
}

var _ metav1.Object = (*cachedMeta)(nil)

// SecretType is what the filters need of a Secret's type: whether it holds
// a service account's token.
func (m *cachedMeta) SecretType() string {
	if m.saToken {
		return filter.ServiceAccountTokenType
	}
	return ""
}

func (m *cachedMeta) deepCopy() cachedMeta {
	out := *m
	out.labels, out.annotations = maps.Clone(m.labels), maps.Clone(m.annotations)
	if m.owners != nil {
		out.owners = make([]metav1.OwnerReference, len(m.owners))
		for i := range m.owners {
			m.owners[i].DeepCopyInto(&out.owners[i])
		}
	}
	return out
}

func (m *cachedMeta) GetNamespace() string                         { return m.namespace }
func (m *cachedMeta) SetNamespace(namespace string)                { m.namespace = namespace }
func (m *cachedMeta) GetName() string                              { return m.name }
func (m *cachedMeta) SetName(name string)                          { m.name = name }
func (m *cachedMeta) GetUID() types.UID                            { return m.uid }
func (m *cachedMeta) SetUID(uid types.UID)                         { m.uid = uid }
func (m *cachedMeta) GetResourceVersion() string                   { return m.resourceVersion }
func (m *cachedMeta) SetResourceVersion(version string)            { m.resourceVersion = version }
func (m *cachedMeta) GetLabels() map[string]string                 { return m.labels }
func (m *cachedMeta) SetLabels(labels map[string]string)           { m.labels = labels }
func (m *cachedMeta) GetAnnotations() map[string]string            { return m.annotations }
func (m *cachedMeta) SetAnnotations(annotations map[string]string) { m.annotations = annotations }
func (m *cachedMeta) GetOwnerReferences() []metav1.OwnerReference  { return m.owners }
func (m *cachedMeta) SetOwnerReferences(references []metav1.OwnerReference) {
	m.owners = references
}

// The fields the caches do not keep.

func (m *cachedMeta) GetGenerateName() string                       { return "" }
func (m *cachedMeta) SetGenerateName(string)                        {}
func (m *cachedMeta) GetGeneration() int64                          { return 0 }
func (m *cachedMeta) SetGeneration(int64)                           {}
func (m *cachedMeta) GetSelfLink() string                           { return "" }
func (m *cachedMeta) SetSelfLink(string)                            {}
func (m *cachedMeta) GetCreationTimestamp() metav1.Time             { return metav1.Time{} }
func (m *cachedMeta) SetCreationTimestamp(metav1.Time)              {}
func (m *cachedMeta) GetDeletionTimestamp() *metav1.Time            { return nil }
func (m *cachedMeta) SetDeletionTimestamp(*metav1.Time)             {}
func (m *cachedMeta) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (m *cachedMeta) SetDeletionGracePeriodSeconds(*int64)          {}
func (m *cachedMeta) GetFinalizers() []string                       { return nil }
func (m *cachedMeta) SetFinalizers([]string)                        {}
func (m *cachedMeta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (m *cachedMeta) SetManagedFields([]metav1.ManagedFieldsEntry)  {}

// lastManager is the field manager that changed the object last: the
// managedFields entry with the latest time, changes through a subresource
// (status, scale) aside, since they are not what the document records; of
// entries with the same time, the last listed. "" when the object has none.
// A name that is not printable ASCII is escaped, as store metadata must be.
func lastManager(fields []metav1.ManagedFieldsEntry) unique.Handle[string] {
	best := -1
	for i, f := range fields {
		if f.Subresource != "" || f.Manager == "" {
			continue
		}
		if best < 0 || !changedAt(f).Before(changedAt(fields[best])) {
			best = i
		}
	}
	if best < 0 {
		return unique.Make("")
	}
	name := fields[best].Manager
	for _, r := range name {
		if r < 0x20 || r > 0x7e {
			name = url.PathEscape(name)
			break
		}
	}
	return unique.Make(name)
}

// changedAt is when a managedFields entry was last updated; the zero time
// when it does not say.
func changedAt(f metav1.ManagedFieldsEntry) time.Time {
	if f.Time == nil {
		return time.Time{}
	}
	return f.Time.Time
}
