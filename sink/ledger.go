package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// Ledger is what the store holds of the cluster's prefix, as far as the
// service knows: learnt from one listing at start (Seed), then kept by the
// Writer's own writes and deletes. The Writer skips a write whose bytes it
// records, the snapshot pass compares the caches with it, the restore pack
// trusts what it records, and a store whose listings carry no metadata
// gets it back at start from the change index it writes (index.go).
type Ledger struct {
	store   Store
	layout  object.Layout
	signer  *object.Signer
	log     *zap.Logger
	metrics *metrics.Metrics
	paused  atomic.Bool // no index is written while the prefix is another cluster's

	mu     sync.Mutex
	hashes map[string]storedState // what the store holds of this cluster's, by key
	// foreign holds, by a 64-bit hash of their keys, the keys in the
	// layout that another cluster wrote: never deleted. A hash keeps the
	// state per key small when the prefix holds many (a collision with a
	// key of ours only keeps that key from being deleted).
	foreign map[uint64]struct{}
	keySeed maphash.Seed
	// bareListings: the store's listings carry no user metadata (any S3
	// but MinIO); fingerprints then come from the index (index.go).
	bareListings bool
	savedIndex   string // digest of the index last written
	seq          uint64 // counts successful writes
	// unstorable are the keys the store can never hold, counted and
	// logged once, then skipped without a call.
	unstorable map[string]bool
	identity   object.Identity // its UID stamped on every write
}

// NewLedger returns an empty ledger of layout's prefix in store; Seed
// fills it.
func NewLedger(store Store, layout object.Layout, signer *object.Signer, log *zap.Logger, m *metrics.Metrics) *Ledger {
	return &Ledger{
		store: store, layout: layout, signer: signer, log: log, metrics: m,
		hashes:     map[string]storedState{},
		foreign:    map[uint64]struct{}{},
		keySeed:    maphash.MakeSeed(),
		unstorable: map[string]bool{},
	}
}

// storedState is what the writer knows a key holds: its SHA-256, and the
// sequence number of the writer's own write of it (0 when learnt from a
// listing).
type storedState struct {
	sum [sha256.Size]byte // zero when unknown
	seq uint64
	// etag and size of the stored object, kept for the index of a store
	// with bare listings.
	etag string
	size int64
	// foreign: another cluster wrote it (its cluster UID is not ours);
	// it is never deleted.
	foreign bool
}

// Seeded counts what Seed found under the cluster's prefix.
type Seeded struct {
	Own, Foreign, Outside int
	// BareListings: the listing carried no user metadata; Indexed of the
	// own keys had their fingerprint from the index.
	BareListings bool
	Indexed      int
	// Pack: the cluster's restore pack is stored.
	Pack bool
}

// digest parses a hex SHA-256; anything else (a key put by hand) gives the
// zero digest, which matches no document.
func digest(hexSum string) [sha256.Size]byte {
	var d [sha256.Size]byte
	if len(hexSum) != hex.EncodedLen(sha256.Size) {
		return d
	}
	if _, err := hex.Decode(d[:], []byte(hexSum)); err != nil {
		return [sha256.Size]byte{}
	}
	return d
}

// Seed learns what the store holds under the cluster's prefix, so that a
// restart over an unchanged cluster writes nothing. It keeps the digest of
// each of this cluster's keys, a hash of each key another cluster wrote,
// and nothing of keys outside the layout, which it never touches.
func (l *Ledger) Seed(ctx context.Context) (Seeded, error) {
	var n Seeded
	l.mu.Lock()
	id := l.identity
	l.mu.Unlock()
	hashes, foreign := map[string]storedState{}, map[uint64]struct{}{}
	var unvouched []object.Stored // listed without metadata
	bare := false
	err := l.store.Walk(ctx, l.layout.Root(), func(s object.Stored) error {
		switch _, ours := l.layout.Parse(s.Key); {
		case s.Key == l.layout.IdentityKey():
			// Written with its owner's metadata just before: a listing
			// that does not show it carries no metadata at all.
			bare = bare || s.Meta.ClusterUID == ""
		case s.Key == l.layout.IndexKey():
		case s.Key == l.layout.PackKey():
			n.Pack = true
		case !ours:
			n.Outside++
		case !id.Owns(s.Meta.ClusterUID):
			foreign[l.keyHash(s.Key)] = struct{}{}
		case s.Meta.Fingerprint() == "" && s.Meta.ClusterUID == "":
			bare = true
			unvouched = append(unvouched, object.Stored{Key: s.Key, ETag: s.ETag, Size: s.Size})
			hashes[s.Key] = storedState{} // unknown unless the index vouches
		case l.signer.Check(s.Key, s.Meta) != nil:
			hashes[s.Key] = storedState{} // not what this installation signed: written again
		default:
			hashes[s.Key] = storedState{sum: digest(s.Meta.Fingerprint())}
		}
		return nil
	})
	if err != nil {
		l.metrics.Error(logging.OpStoreList)
		return n, err
	}
	// Only a store whose listings carry no metadata has an index to read.
	if bare {
		idx := l.loadIndex(ctx)
		for _, s := range unvouched {
			e, ok := idx[s.Key]
			if fp := known(s, e, ok); fp != "" {
				hashes[s.Key] = storedState{sum: digest(fp), etag: s.ETag, size: s.Size}
				n.Indexed++
			}
		}
	}
	n.Own, n.Foreign, n.BareListings = len(hashes), len(foreign), bare
	l.mu.Lock()
	l.hashes, l.foreign, l.bareListings = hashes, foreign, bare
	l.mu.Unlock()
	return n, nil
}

func (l *Ledger) keyHash(key string) uint64 { return maphash.String(l.keySeed, key) }

// SetIdentity sets the cluster that owns the prefix: its UID is stamped
// on every write, and keys stored by a cluster it neither is nor adopted
// are never written over or deleted. Call it before Seed.
func (l *Ledger) SetIdentity(id object.Identity) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.identity = id
}

// Walk visits what the writer knows the store to hold of this cluster's
// under prefix: the Seed listing, updated by its own writes and deletes
// since. The snapshot pass right after start-up reads it instead of
// listing the store again moments after Seed did. Each entry's metadata
// carries only the fingerprint (in SHA256); keys of other clusters and
// outside the layout are not visited (a pass never touches them).
func (l *Ledger) Walk(_ context.Context, prefix string, visit func(object.Stored) error) error {
	l.mu.Lock()
	var out []object.Stored
	for key, st := range l.hashes {
		if strings.HasPrefix(key, prefix) {
			out = append(out, object.Stored{Key: key, Meta: object.Meta{SHA256: hex.EncodeToString(st.sum[:])}})
		}
	}
	l.mu.Unlock()
	for _, s := range out {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// Seq returns the writer's write sequence number. A caller that lists the
// store passes the number it read before listing to Apply, so that keys the
// writer has written since are not written again.
func (l *Ledger) Seq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

func (l *Ledger) state(key string) storedState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.hashes[key]
	_, st.foreign = l.foreign[l.keyHash(key)]
	return st
}

func (l *Ledger) isUnstorable(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unstorable[key]
}

func (l *Ledger) stored(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.hashes[key]
	_, foreign := l.foreign[l.keyHash(key)]
	return ok || foreign
}

func (l *Ledger) remember(key, sum string, body []byte) {
	l.mu.Lock()
	l.seq++
	st := storedState{sum: digest(sum), seq: l.seq}
	if l.bareListings {
		st.etag, st.size = object.ETag(body), int64(len(body))
	}
	l.hashes[key] = st
	delete(l.foreign, l.keyHash(key)) // ours now
	l.mu.Unlock()
}

// Stores says whether the writer knows key to hold the document with this
// fingerprint: its own write of it, or a listing that showed it.
func (l *Ledger) Stores(key, fingerprint string) bool {
	st := l.state(key)
	return !st.foreign && st.sum != ([sha256.Size]byte{}) && st.sum == digest(fingerprint)
}

// ClusterUID is the identity stamped on every write.
func (l *Ledger) ClusterUID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.identity.UID
}

// Forget drops what the writer knows of key's stored state: the next Apply
// of its object writes it, whatever it held.
func (l *Ledger) Forget(key string) { l.forget(key) }

func (l *Ledger) forget(key string) {
	l.mu.Lock()
	delete(l.hashes, key)
	l.mu.Unlock()
}

// loadIndex reads the index; a missing or damaged index, or one the
// Signer does not accept, is empty (every object without listed metadata
// is then written again once).
func (l *Ledger) loadIndex(ctx context.Context) map[string]indexEntry {
	key := l.layout.IndexKey()
	body, meta, err := l.store.Get(ctx, key, "")
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			l.log.Warn("Cannot read the change index; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": key, "error": err.Error()}))
		}
		return nil
	}
	if err := l.signer.CheckBytes(key, body, meta.Integrity); err != nil {
		l.log.Warn("The change index is not signed with this installation's integrity key; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": key, "error": err.Error()}))
		return nil
	}
	idx, err := decodeIndex(body)
	if err != nil {
		l.log.Warn("The change index is damaged; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": l.layout.IndexKey(), "error": err.Error()}))
		return nil
	}
	return idx
}

// known is the fingerprint of a listed key whose listing carries no
// metadata, when the index or the writer's own write of it vouches for its
// size and ETag; "" otherwise.
func known(s object.Stored, e indexEntry, ok bool) string {
	if !ok || s.ETag == "" || e.etag != s.ETag || e.size != s.Size {
		return ""
	}
	return e.sum
}

// Known is the fingerprint of a listed key: its metadata's, or, for a
// store whose listings carry none, what the writer knows it wrote there if
// the listing's size and ETag still match; "" when unknown. A pass compares
// caches with it.
func (l *Ledger) Known(s object.Stored) string {
	if fp := s.Meta.Fingerprint(); fp != "" {
		return fp
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.hashes[s.Key]
	return known(s, indexEntry{sum: hex.EncodeToString(st.sum[:]), size: st.size, etag: st.etag}, ok && st.etag != "")
}

// SaveIndex writes the index when the store's listings carry no metadata
// and what the writer knows changed since it last wrote it. The service
// calls it after each pass and at shutdown.
func (l *Ledger) SaveIndex(ctx context.Context) error {
	l.mu.Lock()
	if !l.bareListings || l.paused.Load() {
		l.mu.Unlock()
		return nil
	}
	entries := make(map[string]indexEntry, len(l.hashes))
	for k, st := range l.hashes {
		if st.etag != "" && st.sum != ([32]byte{}) {
			entries[k] = indexEntry{sum: hex.EncodeToString(st.sum[:]), size: st.size, etag: st.etag}
		}
	}
	l.mu.Unlock()
	body := encodeIndex(entries)
	sum := object.Digest(body)
	if sum == l.savedIndex {
		return nil
	}
	key := l.layout.IndexKey()
	if err := l.store.Put(ctx, key, body, object.Meta{SHA256: sum, Integrity: l.signer.SignBytes(key, body)}); err != nil {
		l.metrics.Error(logging.OpObjectWrite)
		return fmt.Errorf("write the change index: %w", err)
	}
	l.savedIndex = sum
	return nil
}

func (l *Ledger) markUnstorable(key string) {
	l.mu.Lock()
	l.unstorable[key] = true
	l.mu.Unlock()
}
