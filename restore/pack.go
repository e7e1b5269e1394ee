package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
)

// Opener streams one version of a key (sink.MinIO); a Reader without it
// reads the restore pack whole.
type Opener interface {
	Open(ctx context.Context, key, id string) (io.ReadCloser, error)
}

// Using the pack pays when it is not much larger than what the GETs it
// saves would fetch: a request costs as much as tens of KiB of a
// sequential read, on the store and on the client alike.
const (
	packMinItems    = 16
	packBytesPerGet = 64 << 10
)

// Packed reads the documents of a view from the cluster's restore pack
// where the pack holds the very version the view chose (package pack
// checks size, MD5 and SHA-256), and everything else from its own key.
type Packed struct {
	Reader
	// Version is the version of the pack read.
	Version  object.Version
	mu       sync.Mutex
	entries  map[string]pack.Entry
	chosen   map[string]object.Version
	fromPack atomic.Int64
	fromKeys atomic.Int64
}

// WithPack returns a Reader over r that serves items from the restore pack
// of layout nearest to t: its newest version at or before t, else its
// oldest after t (an entry is used only where it is the chosen version, so
// any pack is safe; the nearest holds the most). It returns nil and the
// reason when there is no pack or too few items to pay for reading it,
// and nil and an error when the pack cannot be read; the caller then reads
// every item from its key. A pack damaged part way is used for the entries
// before the damage, with a note saying so.
func WithPack(ctx context.Context, r Reader, layout object.Layout, items []Item, t time.Time) (*Packed, string, error) {
	if len(items) < packMinItems {
		return nil, fmt.Sprintf("%d objects are read faster one by one", len(items)), nil
	}
	if !slices.ContainsFunc(items, func(it Item) bool { return pack.Checkable(it.Version.ETag) }) {
		return nil, "the store reports no MD5 of its objects to check the restore pack against", nil
	}
	key := layout.PackKey()
	all, err := r.Versions(ctx, key)
	if err != nil {
		return nil, "", err
	}
	all = slices.DeleteFunc(all, func(v object.Version) bool { return v.Key != key || v.DeleteMarker })
	if len(all) == 0 {
		return nil, "the backup has no restore pack", nil
	}
	v := all[len(all)-1] // the oldest
	if at := At(all, t); len(at) > 0 {
		v = at[0]
	}
	if v.Size > int64(len(items))*packBytesPerGet {
		return nil, fmt.Sprintf("the restore pack (%d bytes) is too large for %d objects", v.Size, len(items)), nil
	}
	chosen := make(map[string]object.Version, len(items))
	for _, it := range items {
		chosen[it.Version.Key] = it.Version
	}
	var body io.ReadCloser
	if o, ok := r.(Opener); ok {
		body, err = o.Open(ctx, key, v.ID)
	} else {
		var b []byte
		b, _, err = r.Get(ctx, key, v.ID)
		body = io.NopCloser(bytes.NewReader(b))
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the restore pack %s: %w", key, err)
	}
	defer body.Close()
	entries, err := pack.Load(body, func(k string) bool { _, ok := chosen[k]; return ok })
	note := ""
	if errors.Is(err, pack.ErrDamaged) {
		// What was read before the damage is as good as the rest:
		// each entry is checked when it is used.
		note, err = fmt.Sprintf("%s: %v; the objects it does not hold are read from their own keys", key, err), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the restore pack %s: %w", key, err)
	}
	return &Packed{Reader: r, Version: v, entries: entries, chosen: chosen}, note, nil
}

// Get serves key from the pack when the pack holds the version id of the
// view, and from the store otherwise. Each entry serves once.
func (p *Packed) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	p.mu.Lock()
	e, ok := p.entries[key]
	delete(p.entries, key)
	v := p.chosen[key]
	p.mu.Unlock()
	if ok && v.ID == id {
		if body, err := e.Body(v); err == nil {
			p.fromPack.Add(1)
			return body, e.Meta, nil
		}
	}
	p.fromKeys.Add(1)
	return p.Reader.Get(ctx, key, id)
}

// Read says how many documents came from the pack and how many from their
// own keys.
func (p *Packed) Read() (fromPack, fromKeys int) {
	return int(p.fromPack.Load()), int(p.fromKeys.Load())
}
