package object

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ClusterScope is the namespace segment of cluster-scoped objects.
const ClusterScope = "_cluster"

// identityFile is the name of the cluster's identity marker, beside its
// namespace folders.
const identityFile = "cluster-identity.yaml"

// indexFile is the name of the cluster's change-detection index, beside
// its identity marker.
const indexFile = "cluster-index.tsv.zst"

// packFile is the name of the cluster's restore pack, beside its identity
// marker.
const packFile = "cluster-pack.bin"

// groupsWithoutSuffix are the built-in groups whose resources are stored under
// their bare plural name; every other group is spelled out as plural.group so
// that two groups that share a plural never collide.
var groupsWithoutSuffix = map[string]bool{
	"":            true,
	"apps":        true,
	"batch":       true,
	"autoscaling": true,
	"policy":      true,
}

// Ref identifies one object independently of the API version it is served at,
// so that a CRD version bump does not move its objects in the store.
type Ref struct {
	Group     string
	Resource  string // plural
	Namespace string // empty for cluster-scoped objects
	Name      string
}

// Segment is the {resource} path segment of the storage layout for a type.
func Segment(group, resource string) string {
	if groupsWithoutSuffix[group] {
		return resource
	}
	return resource + "." + group
}

// Segment is the {resource} path segment of r's type.
func (r Ref) Segment() string { return Segment(r.Group, r.Resource) }

// Layout is the storage layout of one cluster's backup:
//
//	{prefix}/{cluster}/{namespace or _cluster}/{resource}/{name}.yaml
//	{prefix}/{cluster}/cluster-identity.yaml
//
// Every key the service writes, lists or deletes is built and read back
// here, so that the two directions cannot drift apart.
type Layout struct {
	Prefix  string // BACKUP_PREFIX
	Cluster string // CLUSTER_NAME
}

// Key returns the key of ref's object.
func (l Layout) Key(ref Ref) string {
	ns := ref.Namespace
	if ns == "" {
		ns = ClusterScope
	}
	return path.Join(l.Prefix, l.Cluster, ns, ref.Segment(), ref.Name+".yaml")
}

// Root is the key prefix, with trailing slash, that holds every object of the
// cluster and nothing of any other.
func (l Layout) Root() string {
	return path.Join(l.Prefix, l.Cluster) + "/"
}

// IdentityKey is the key of the marker that records which cluster owns
// Root (its Meta.ClusterUID). It is outside the object layout, so Parse
// never takes it for an object.
func (l Layout) IdentityKey() string {
	return path.Join(l.Prefix, l.Cluster, identityFile)
}

// IndexKey is the key of the index that carries each object's fingerprint
// for stores whose listings carry no user metadata. Like IdentityKey, it is
// outside the object layout.
func (l Layout) IndexKey() string {
	return path.Join(l.Prefix, l.Cluster, indexFile)
}

// PackKey is the key of the restore pack: the stored documents in one
// object, which restore and diff read instead of one object per document
// (package pack). Like IdentityKey, it is outside the object layout.
func (l Layout) PackKey() string {
	return path.Join(l.Prefix, l.Cluster, packFile)
}

// Key is the stored key of one object, as Layout.Parse reads it back. The
// resource segment is kept as stored, because a bare plural ("deployments")
// does not say which of the groups stored without suffix it belongs to:
// Segments, built from what discovery serves, resolves it to a type.
type Key struct {
	Segment   string // {resource} of the layout
	Namespace string // empty for cluster-scoped objects
	Name      string
}

// Ref returns the object's identity once its segment has been resolved.
func (k Key) Ref(gr GroupResource) Ref {
	return Ref{Group: gr.Group, Resource: gr.Resource, Namespace: k.Namespace, Name: k.Name}
}

// Parse is the inverse of Key. ok is false for keys that are not in the
// layout (the identity marker, keys put by hand, other clusters' keys).
func (l Layout) Parse(key string) (Key, bool) {
	rest, found := strings.CutPrefix(key, l.Root())
	if !found {
		return Key{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return Key{}, false
	}
	name, found := strings.CutSuffix(parts[2], ".yaml")
	if !found || name == "" || parts[0] == "" || parts[1] == "" {
		return Key{}, false
	}
	k := Key{Segment: parts[1], Namespace: parts[0], Name: name}
	if k.Namespace == ClusterScope {
		k.Namespace = ""
	}
	return k, true
}

// GroupResource names a type without its version.
type GroupResource struct {
	Group    string
	Resource string // plural
}

// Segments maps the stored resource segments of a set of types back to
// the types.
type Segments map[string]GroupResource

// NewSegments indexes types by their segment. A segment shared by two
// types resolves to neither (their keys cannot be told apart, so none of
// them may be pruned), and the error names both.
func NewSegments(types []GroupResource) (Segments, error) {
	s := make(Segments, len(types))
	var errs []error
	shared := map[string]bool{}
	for _, gr := range types {
		seg := Segment(gr.Group, gr.Resource)
		if prev, dup := s[seg]; dup && prev != gr {
			errs = append(errs, fmt.Errorf("resource segment %q is shared by %s and %s", seg, prev, gr))
			shared[seg] = true
		}
		s[seg] = gr
	}
	for seg := range shared {
		delete(s, seg)
	}
	return s, errors.Join(errs...)
}

// Resolve returns the type stored under seg.
func (s Segments) Resolve(seg string) (GroupResource, bool) {
	gr, ok := s[seg]
	return gr, ok
}

func (gr GroupResource) String() string {
	if gr.Group == "" {
		return gr.Resource
	}
	return gr.Resource + "." + gr.Group
}
