// Package sink is the write side of the pipeline. It owns the Store
// interface and its two real implementations (MinIO and a local directory);
// the decorators that add retries, rate limiting and store health around
// any Store without the storage code knowing about them; the Writer, a
// queue that debounces changes per object and writes, skips or deletes each
// key, and owns the retries of those writes; and the Writer's Ledger, what
// the store holds of the prefix as far as the service knows (with the
// change index that carries it across restarts on stores whose listings
// have no metadata), which the snapshot pass and the restore pack read.
package sink

import (
	"context"
	"errors"
	"fmt"

	"github.com/cluster-backup/cluster-backup/object"
)

// Store holds one YAML document per key.
type Store interface {
	// Put writes body under key with meta; it is idempotent.
	Put(ctx context.Context, key string, body []byte, meta object.Meta) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Walk visits every key under prefix with its metadata, one at a
	// time, so that a caller keeps no more of each than it needs, however
	// many keys there are. After a listing is retried a key may be visited
	// again. An error of visit ends the walk and is returned.
	Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error
	// Get reads one version of key ("" for the current one) with the
	// metadata stored beside it; ErrNotFound when there is none.
	Get(ctx context.Context, key, id string) ([]byte, object.Meta, error)
}

// Walker lists keys one at a time (Store.Walk).
type Walker interface {
	Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error
}

// List collects a walk under prefix: for prefixes known to hold few keys.
func List(ctx context.Context, w Walker, prefix string) ([]object.Stored, error) {
	var out []object.Stored
	err := w.Walk(ctx, prefix, func(s object.Stored) error {
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ErrNotFound is returned by Get for a key or version the store does not
// hold (object.ErrNotFound, which stages that only read through an
// interface test for).
var ErrNotFound = object.ErrNotFound

// ErrPermanent marks store errors that a retry cannot fix (access denied, a
// missing bucket, an invalid key). Anything else is treated as transient.
var ErrPermanent = errors.New("permanent store error")

// ErrUnstorable marks a key that this store can never hold (too long for
// S3 or for a file name). It is also permanent. The writer counts such a key
// once, logs it once, and does not retry it: it is not a store outage.
var ErrUnstorable = fmt.Errorf("key cannot be stored: %w", ErrPermanent)
