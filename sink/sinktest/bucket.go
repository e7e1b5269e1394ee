// Package sinktest is an in-memory versioned bucket for the unit tests of
// what reads and appends to the backup (the journal, git-sync, the web
// view): each key's versions newest first, documents by version, the
// current keys in order, folders, and a log of the requests made. It is
// no stand-in for a store in a test that claims the service backs up or
// restores: those run against real MinIO.
package sinktest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

// Request is one call made of a Bucket: Op is "versions", "get", "walk",
// "folders" or "put"; Key the key or prefix it names.
type Request struct {
	Op, Key string
}

// Bucket is an in-memory bucket with versioning on.
type Bucket struct {
	// Now dates the versions Put makes (default time.Now).
	Now func() time.Time

	mu       sync.Mutex
	versions map[string][]object.Version // newest first
	bodies   map[string][]byte           // by version ID
	metas    map[string]object.Meta      // by version ID
	n        int
	fail     error
	requests []Request
}

// New returns an empty Bucket.
func New() *Bucket {
	return &Bucket{versions: map[string][]object.Version{}, bodies: map[string][]byte{}, metas: map[string]object.Meta{}}
}

// SetFail makes every Put fail with err until it is called with nil.
func (b *Bucket) SetFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// PutAt stores a version of key made at, and returns its ID.
func (b *Bucket) PutAt(key string, body []byte, meta object.Meta, at time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	id := fmt.Sprintf("v%04d", b.n)
	b.bodies[id], b.metas[id] = append([]byte(nil), body...), meta
	b.versions[key] = append([]object.Version{{Key: key, ID: id, Time: at, Size: int64(len(body)), ETag: object.ETag(body)}}, b.versions[key]...)
	return id
}

// DeleteAt puts a delete marker on key, made at.
func (b *Bucket) DeleteAt(key string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	b.versions[key] = append([]object.Version{{Key: key, ID: fmt.Sprintf("v%04d", b.n), Time: at, DeleteMarker: true}}, b.versions[key]...)
}

// Put stores a version of key now (journal.Putter), or fails as SetFail
// asks.
func (b *Bucket) Put(_ context.Context, key string, body []byte, meta object.Meta) error {
	b.mu.Lock()
	b.requests = append(b.requests, Request{"put", key})
	fail := b.fail
	b.mu.Unlock()
	if fail != nil {
		return fail
	}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	b.PutAt(key, body, meta, now())
	return nil
}

// Versions lists every version under prefix: keys in order, each newest
// first.
func (b *Bucket) Versions(_ context.Context, prefix string) ([]object.Version, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, Request{"versions", prefix})
	var out []object.Version
	for _, k := range b.keys(prefix, "", true) {
		out = append(out, b.versions[k]...)
	}
	return out, nil
}

// Get reads version id of key, or its current version when id is "".
func (b *Bucket) Get(_ context.Context, key, id string) ([]byte, object.Meta, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, Request{"get", key})
	vs := b.versions[key]
	if id == "" && len(vs) > 0 && !vs[0].DeleteMarker {
		id = vs[0].ID
	}
	for _, v := range vs {
		if v.ID == id && !v.DeleteMarker {
			return append([]byte(nil), b.bodies[id]...), b.metas[id], nil
		}
	}
	return nil, object.Meta{}, object.ErrNotFound
}

// WalkAfter visits the current keys under prefix that sort after after,
// in order.
func (b *Bucket) WalkAfter(_ context.Context, prefix, after string, visit func(object.Stored) error) error {
	b.mu.Lock()
	b.requests = append(b.requests, Request{"walk", prefix})
	var current []object.Stored
	for _, k := range b.keys(prefix, after, false) {
		v := b.versions[k][0]
		current = append(current, object.Stored{Key: k, Meta: b.metas[v.ID], Size: v.Size})
	}
	b.mu.Unlock()
	for _, s := range current {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// Folders lists the names of the folders directly under prefix that
// hold a current key.
func (b *Bucket) Folders(_ context.Context, prefix string) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, Request{"folders", prefix})
	seen := map[string]bool{}
	var out []string
	for _, k := range b.keys(prefix, "", false) {
		if name, _, ok := strings.Cut(strings.TrimPrefix(k, prefix), "/"); ok && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}

// Current returns the current keys under prefix, in order.
func (b *Bucket) Current(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keys(prefix, "", false)
}

// Requests returns the requests made so far, in order.
func (b *Bucket) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.requests...)
}

// Count returns how many requests made so far match.
func (b *Bucket) Count(match func(Request) bool) int {
	n := 0
	for _, r := range b.Requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// keys are the keys under prefix after after, in order: every key with a
// version, or (all false) those whose newest version is not a delete
// marker. The caller holds mu.
func (b *Bucket) keys(prefix, after string, all bool) []string {
	var out []string
	for k, vs := range b.versions {
		if strings.HasPrefix(k, prefix) && k > after && (all || !vs[0].DeleteMarker) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
