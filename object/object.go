// Package object holds the small types every pipeline stage shares: an
// object's identity (Ref), the storage layout that maps it to a key and back
// (Layout, Segments), the metadata stored beside it (Meta), what the
// caches know of it (State), what handling its key did (Outcome), and the
// delete holds and reloadable settings the writer and the pass both
// consult (Holds, Settings). It sits at the bottom of the import graph so
// that the watcher, encode, sink and snapshot stages agree on keys without
// importing each other.
package object

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Meta is the metadata stored beside each object, so that a restart or a
// snapshot pass can tell unchanged objects apart without downloading them.
type Meta struct {
	ResourceVersion string
	UID             string
	APIVersion      string // group/version, "v1" for the core group
	SHA256          string // lower-case hex of the stored bytes
	// HMAC is set on a document stored with its values encrypted: the
	// keyed digest (HMAC-SHA256, lower-case hex) of its plaintext, which
	// change detection compares, since the ciphertext differs on every
	// encryption.
	HMAC string
	// ClusterUID identifies the cluster that wrote the object (the UID of
	// its kube-system namespace), so that a service never deletes what
	// another cluster of the same CLUSTER_NAME stored. Empty on objects
	// written before it was recorded.
	ClusterUID string
	// Manager is the field manager that made the change the document
	// records (kubectl-edit, helm, argocd-controller), read from the
	// object's managedFields before they are stripped: the entry updated
	// last, status aside. Empty where the object had none, and on
	// documents written before it was recorded.
	Manager string
	// Integrity authenticates the document: the HMAC-SHA256, under the
	// installation's integrity key, of its key, the fields above and so
	// its bytes (see Signer). Empty on documents written without a key.
	Integrity string
}

// User-metadata keys of Meta, as stored (S3 sends them as X-Amz-Meta-*).
const (
	MetaResourceVersion = "resource-version"
	MetaUID             = "uid"
	MetaAPIVersion      = "api-version"
	MetaSHA256          = "sha256"
	MetaClusterUID      = "cluster-uid"
	MetaHMAC            = "hmac-sha256"
	MetaIntegrity       = "integrity"
	MetaManager         = "manager"
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
	if m.HMAC != "" {
		out[MetaHMAC] = m.HMAC
	}
	if m.Manager != "" {
		out[MetaManager] = m.Manager
	}
	if m.Integrity != "" {
		out[MetaIntegrity] = m.Integrity
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
		case MetaHMAC:
			m.HMAC = v
		case MetaIntegrity:
			m.Integrity = v
		case MetaManager:
			m.Manager = v
		}
	}
	return m
}

// Fingerprint is what change detection compares: HMAC for an encrypted
// document, else SHA256: both lower-case hex of 32 bytes. Equal
// fingerprints mean the same content; turning encryption on or off changes
// every Secret's fingerprint, so the next pass rewrites them.
func (m Meta) Fingerprint() string {
	if m.HMAC != "" {
		return m.HMAC
	}
	return m.SHA256
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
	// ETag and Size are what any S3 listing reports of the object, with
	// or without its user metadata.
	ETag string
	Size int64
}

// ETag is the entity tag S3 stores report for body written in one plain
// PUT: the hex MD5 of the bytes (stores that encrypt with a KMS report
// another, which only makes an index entry never match).
func ETag(body []byte) string {
	sum := md5.Sum(body) //nolint:gosec // the S3 entity tag, not a security digest
	return hex.EncodeToString(sum[:])
}

// Version is one stored version of a key, as a listing of versions reports
// it.
type Version struct {
	Key          string
	ID           string    // the store's version ID; "" where it keeps none
	Time         time.Time // when the store took it
	DeleteMarker bool      // the key was deleted at Time
	Size         int64
	ETag         string // as the listing reports it; "" where unknown
}

// Document is an object rendered for the store: its bytes and the metadata
// stored beside them.
type Document struct {
	Body []byte
	Meta Meta
	// Emitted says encode's emitter wrote Body, which reads back as its
	// object by construction (encode.Encoded.Emitted): validate-yaml
	// need not parse it.
	Emitted bool
	// Shape is the structure of the object Body was encoded from
	// (encode.Shape), for validate-yaml; 0 when not known.
	Shape uint64
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
