// Package object holds the small types every pipeline stage shares: where a
// Kubernetes object lives in the store and the metadata stored beside it. It
// sits at the bottom of the import graph so that the watcher, filter, sink and
// snapshot stages can agree on keys without importing each other.
package object

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
)

// ClusterScope is the namespace segment of cluster-scoped objects.
const ClusterScope = "_cluster"

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

// ResourceSegment is the {resource} path segment of the storage layout.
func ResourceSegment(group, resource string) string {
	if groupsWithoutSuffix[group] {
		return resource
	}
	return resource + "." + group
}

// Key returns the object's key under prefix and cluster:
// {prefix}/{cluster}/{namespace or _cluster}/{resource}/{name}.yaml.
func (r Ref) Key(prefix, cluster string) string {
	ns := r.Namespace
	if ns == "" {
		ns = ClusterScope
	}
	return path.Join(prefix, cluster, ns, ResourceSegment(r.Group, r.Resource), r.Name+".yaml")
}

// ClusterPrefix is the key prefix, with trailing slash, that holds every
// object of one cluster and nothing of any other.
func ClusterPrefix(prefix, cluster string) string {
	return path.Join(prefix, cluster) + "/"
}

// Meta is the metadata stored beside each object, so that a restart or a
// snapshot pass can tell unchanged objects apart without downloading them.
type Meta struct {
	ResourceVersion string
	UID             string
	APIVersion      string // group/version, "v1" for the core group
	SHA256          string // lower-case hex of the stored bytes
	// ClusterUID identifies the cluster that wrote the object (the UID of
	// its kube-system namespace), so that a service never deletes what
	// another cluster of the same CLUSTER_NAME stored. Empty on objects
	// written before it was recorded.
	ClusterUID string
}

// User-metadata keys of Meta, as stored (S3 sends them as X-Amz-Meta-*).
const (
	MetaResourceVersion = "resource-version"
	MetaUID             = "uid"
	MetaAPIVersion      = "api-version"
	MetaSHA256          = "sha256"
	MetaClusterUID      = "cluster-uid"
)

// Map returns m as store user metadata.
func (m Meta) Map() map[string]string {
	out := map[string]string{
		MetaResourceVersion: m.ResourceVersion,
		MetaUID:             m.UID,
		MetaAPIVersion:      m.APIVersion,
		MetaSHA256:          m.SHA256,
	}
	if m.ClusterUID != "" {
		out[MetaClusterUID] = m.ClusterUID
	}
	return out
}

// MetaFromMap reads Meta back from user metadata. Keys are matched without
// regard to case or an X-Amz-Meta- prefix, because S3 servers differ in how
// they return them.
func MetaFromMap(md map[string]string) Meta {
	var m Meta
	for k, v := range md {
		k = strings.ToLower(k)
		k = strings.TrimPrefix(k, "x-amz-meta-")
		switch k {
		case MetaResourceVersion:
			m.ResourceVersion = v
		case MetaUID:
			m.UID = v
		case MetaAPIVersion:
			m.APIVersion = v
		case MetaSHA256:
			m.SHA256 = v
		case MetaClusterUID:
			m.ClusterUID = v
		}
	}
	return m
}

// Digest is the lower-case hex SHA-256 of body, as stored in Meta.SHA256.
func Digest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// IdentityKey is the key of the marker that records which cluster owns the
// prefix {prefix}/{cluster}/ (its Meta.ClusterUID). It is outside the
// object layout, so no pass ever takes it for an object.
func IdentityKey(prefix, cluster string) string {
	return path.Join(prefix, cluster, "cluster-identity.yaml")
}

// Stored is one entry of a store listing.
type Stored struct {
	Key  string
	Meta Meta
}

// Document is an object rendered for the store: its bytes and the metadata
// stored beside them.
type Document struct {
	Body []byte
	Meta Meta
}

// Key is the stored key of one object, as ParseKey reads it back. The
// resource segment is kept as stored, because a bare plural ("deployments")
// does not say which of the groups stored without suffix it belongs to:
// only what discovery knows resolves it to a group.
type Key struct {
	Segment   string // {resource} of the layout
	Namespace string // empty for cluster-scoped objects
	Name      string
}

// Ref returns the object's identity once its segment has been resolved.
func (k Key) Ref(group, resource string) Ref {
	return Ref{Group: group, Resource: resource, Namespace: k.Namespace, Name: k.Name}
}

// ParseKey is the inverse of Ref.Key for keys under prefix and cluster. ok is
// false for keys that are not in the layout (the cluster's identity marker,
// keys put by hand).
func ParseKey(prefix, cluster, key string) (Key, bool) {
	rest, found := strings.CutPrefix(key, ClusterPrefix(prefix, cluster))
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

// State says what the informer caches know about one object.
type State int

// States of an object in the caches.
const (
	// Unknown: its type has no complete cache (not discovered, failing,
	// denied, or still listing), so nothing may be concluded, least of
	// all that the object is gone.
	Unknown State = iota
	// Present: the object exists and is selected.
	Present
	// Absent: its type's cache is complete and the object is not in it,
	// or the rules in force leave it out. Its key must not be stored.
	Absent
)
