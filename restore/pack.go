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
//
// The pack is read as documents are asked for, in its order: entries read
// on the way to the one asked for are kept until they are asked for (only
// those of the versions chosen). The service writes the pack in key order,
// the order of a listing, so that a reader asking in that order (diff,
// a folder at a time) holds a few entries at once; one asking in another
// order (restore, by waves) holds at most what it has not asked for yet.
// A document a pack in key order does not hold is known to be absent once
// the pack has been read past its key.
type Packed struct {
	Reader
	// Version is the version of the pack read.
	Version object.Version
	// Signer, when set, must accept an entry's integrity tag for the entry
	// to be used; else the document is read from its key, so that a pack
	// altered in the bucket costs speed, never a document.
	Signer   *object.Signer
	fromPack atomic.Int64
	fromKeys atomic.Int64

	mu     sync.Mutex
	body   io.Closer
	pack   *pack.Reader // nil once read to its end or its damage
	last   string       // the last key read
	ahead  map[string]pack.Entry
	chosen map[string]object.Version
	damage error
}

// WithPack returns a Reader over r that serves items from the restore pack
// of layout nearest to t: its newest version at or before t, else its
// oldest after t (an entry is used only where it is the chosen version, so
// any pack is safe; the nearest holds the most). It returns nil and the
// reason when there is no pack or too few items to pay for reading it,
// and nil and an error when the pack cannot be opened; the caller then
// reads every item from its key. The caller closes the Packed. A pack
// damaged part way is used for the entries before the damage; Damage
// says what it was.
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
	p := &Packed{Reader: r, Version: v, body: body, ahead: map[string]pack.Entry{}, chosen: chosen}
	if p.pack, err = pack.NewReader(body); err != nil {
		body.Close()
		if !errors.Is(err, pack.ErrDamaged) {
			return nil, "", fmt.Errorf("read the restore pack %s: %w", key, err)
		}
		p.damage = err // not a pack: every document is read from its key
	}
	return p, "", nil
}

// Get serves key from the pack when the pack holds the version id of the
// view, and from the store otherwise. Each entry serves once.
func (p *Packed) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	e, v, ok := p.entry(key)
	if ok && v.ID == id && (p.Signer == nil || p.Signer.Check(key, e.Meta) == nil) {
		if body, err := e.Body(v); err == nil {
			p.fromPack.Add(1)
			return body, e.Meta, nil
		}
	}
	p.fromKeys.Add(1)
	return p.Reader.Get(ctx, key, id)
}

// ReadAll reads the rest of the pack at once, keeping the entries of the
// chosen versions, and lets the connection go: for a reader that asks in
// another order than the pack's (restore, by waves), which would otherwise
// read it all at its first question anyway and hold the connection open
// for as long as it runs.
func (p *Packed) ReadAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next("")
}

// entry finds key's entry: read ahead before, or further on in the pack.
func (p *Packed) entry(key string) (pack.Entry, object.Version, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, chosen := p.chosen[key]
	delete(p.chosen, key)
	if e, ok := p.ahead[key]; ok {
		delete(p.ahead, key)
		return e, v, chosen
	}
	if !chosen {
		return pack.Entry{}, v, false
	}
	// In a pack in key order, a key before the last one read is not
	// further on.
	if p.pack != nil && (!p.pack.Sorted() || p.last < key) {
		if e, ok := p.next(key); ok {
			return e, v, true
		}
	}
	return pack.Entry{}, v, false
}

// next reads on until key's entry (every entry, for ""), keeping the
// chosen entries passed on the way; p.mu is held.
func (p *Packed) next(key string) (pack.Entry, bool) {
	for p.pack != nil {
		k, e, err := p.pack.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.damage = err
			}
			p.pack = nil
			p.body.Close()
			break
		}
		p.last = k
		if k == key {
			return e, true
		}
		if _, wanted := p.chosen[k]; wanted {
			p.ahead[k] = e
		}
		if key != "" && p.pack.Sorted() && k > key {
			break // not in the pack
		}
	}
	return pack.Entry{}, false
}

// Close lets the pack go.
func (p *Packed) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pack != nil {
		p.pack = nil
		return p.body.Close()
	}
	return nil
}

// Damage is the damage the pack was found to have, read so far: nil for a
// pack whole so far.
func (p *Packed) Damage() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.damage
}

// Read says how many documents came from the pack and how many from their
// own keys.
func (p *Packed) Read() (fromPack, fromKeys int) {
	return int(p.fromPack.Load()), int(p.fromKeys.Load())
}
