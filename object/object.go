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
}

// User-metadata keys of Meta, as stored (S3 sends them as X-Amz-Meta-*).
const (
	MetaResourceVersion = "resource-version"
	MetaUID             = "uid"
	MetaAPIVersion      = "api-version"
	MetaSHA256          = "sha256"
)

// Map returns m as store user metadata.
func (m Meta) Map() map[string]string {
	return map[string]string{
		MetaResourceVersion: m.ResourceVersion,
		MetaUID:             m.UID,
		MetaAPIVersion:      m.APIVersion,
		MetaSHA256:          m.SHA256,
	}
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
		}
	}
	return m
}

// Digest is the lower-case hex SHA-256 of body, as stored in Meta.SHA256.
func Digest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
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

// ParseKey is the inverse of Ref.Key for keys under prefix and cluster. A
// bare resource segment parses to the core group; its key is the same. ok is
// false for keys that are not in the layout.
func ParseKey(prefix, cluster, key string) (Ref, bool) {
	rest, found := strings.CutPrefix(key, ClusterPrefix(prefix, cluster))
	if !found {
		return Ref{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return Ref{}, false
	}
	name, found := strings.CutSuffix(parts[2], ".yaml")
	if !found || name == "" || parts[0] == "" || parts[1] == "" {
		return Ref{}, false
	}
	r := Ref{Namespace: parts[0], Name: name}
	if r.Namespace == ClusterScope {
		r.Namespace = ""
	}
	r.Resource, r.Group, _ = strings.Cut(parts[1], ".")
	return r, true
}
