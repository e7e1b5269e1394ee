package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// Source renders the latest state of an object, as the informer caches hold
// it. The state is Absent when the object is gone or no longer selected, so
// its key must not be in the store, and Unknown when the caches cannot tell
// (its type is not completely listed): then the key is left as it is. An
// error wrapping encode.ErrInvalid means the object cannot be stored as it
// is.
type Source interface {
	Document(ref object.Ref) (doc object.Document, state object.State, err error)
	// Check runs just before doc is written (validate-yaml); an error
	// wrapping encode.ErrInvalid keeps it out of the store.
	Check(ref object.Ref, doc object.Document) error
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Layout maps objects to keys.
	Layout object.Layout
	// Debounce is the per-object window. A change to an object not
	// written within the last window is written at once; the changes
	// that follow inside the window become one write at its end, so an
	// object is written at most twice per window, and an object that
	// changes continuously once per window.
	Debounce time.Duration
	// Workers is the number of concurrent store calls (BATCH_SIZE).
	Workers int
	// RetryDelay is the first delay before a failed write or delete is
	// tried again; it doubles, with jitter, up to maxRetryDelay. The queue
	// owns these retries: a failing key gives its worker back while it
	// waits, and stays queued until the store takes it.
	RetryDelay time.Duration
	// RetryAttempts is how many of those retries fail before a failure
	// is counted and logged as an error (RETRY_ATTEMPTS), and before
	// Apply reports it Failed.
	RetryAttempts int
	// CallTimeout bounds one store call (0: defaultCallTimeout).
	CallTimeout time.Duration
	// MaxPending bounds the keys waiting to be written. Beyond it, changes
	// are dropped, counted (queue_overflow) and left to the next snapshot
	// pass, which repairs every difference.
	MaxPending int
	// Settings holds skip-invalid-resources, read at each use.
	Settings *Settings
	// QueueMetrics, when set, exports the queue's workqueue metrics.
	QueueMetrics workqueue.MetricsProvider
	// Holds, when set, can hold every delete back (a foreign cluster's
	// prefix, an unversioned bucket).
	Holds *Holds
	// Signer, when set, signs every document written, and a stored
	// document whose tag it does not accept (unsigned, forged) counts as
	// unknown: the next pass writes it again.
	Signer *object.Signer
}

// Outcome is what handling one key did.
type Outcome int

// Outcomes of Apply.
const (
	Failed     Outcome = iota // a store call failed; the key stays queued
	Written                   // the object was put
	Unchanged                 // the store already held these bytes
	Deleted                   // the key was removed
	Absent                    // nothing to store and nothing stored
	Skipped                   // the object is larger than max-resource-size
	Invalid                   // the object is not a valid document
	Unstorable                // the store can never hold its key
	Kept                      // its type is not completely listed, or deletes are held: the key was left as it is
)

// Writer is the debounced sink: it writes a first change at once and
// collapses the changes to one object that follow inside its window into
// one write of its latest state, skips writes whose bytes the
// store already holds, and keeps failed keys queued until the store is back.
type Writer struct {
	store   Store
	direct  Store // store without WithRetry, for the writes the queue retries
	opts    WriterOptions
	log     *zap.Logger
	metrics *metrics.Metrics
	clock   clock.WithTicker
	paused  atomic.Bool // Pause

	queue workqueue.TypedRateLimitingInterface[object.Ref]

	mu      sync.Mutex
	src     Source
	pending map[object.Ref]*pendingItem
	recent  *recent                // when each object was last written, for its window
	hashes  map[string]storedState // what the store holds of this cluster's, by key
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
	forced       map[object.Ref]forcedItem
	flushing     bool
	// unstorable are the keys the store can never hold, counted and
	// logged once, then skipped without a call.
	unstorable map[string]bool
	identity   object.Identity // its UID stamped on every write

	overflowed  atomic.Bool
	holdOnce    sync.Once
	abandon     chan struct{}
	abandonOnce sync.Once
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

// forcedItem is a key that Apply wants handled now.
type forcedItem struct {
	done  chan Outcome
	since uint64
}

type pendingItem struct {
	first time.Time // oldest change not yet written
	due   time.Time // when it is to be written
}

const (
	// maxRetryDelay caps the delay between retries of a failing key.
	maxRetryDelay = 5 * time.Minute
	// defaultCallTimeout bounds one store call: a store that accepts a
	// connection and never answers fails the call, not the worker.
	defaultCallTimeout = time.Minute
)

// jittered spreads the retries of keys that failed together (a store
// outage) by up to a fifth of their delay.
type jittered struct {
	workqueue.TypedRateLimiter[object.Ref]
}

func (j jittered) When(ref object.Ref) time.Duration {
	return wait.Jitter(j.TypedRateLimiter.When(ref), 0.2)
}

// offerWindow bounds Offer: at most this many batches of keys wait.
const offerWindow = 20

// NewWriter returns a Writer; call Seed, then Run. Enqueue may be called
// before Run.
func NewWriter(store Store, opts WriterOptions, log *zap.Logger, m *metrics.Metrics, clk clock.WithTicker) *Writer {
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = defaultCallTimeout
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 1 << 20
	}
	w := &Writer{
		store:   store,
		direct:  withoutRetry(store),
		opts:    opts,
		log:     log,
		metrics: m,
		clock:   clk,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			jittered{workqueue.NewTypedItemExponentialFailureRateLimiter[object.Ref](opts.RetryDelay, maxRetryDelay)},
			workqueue.TypedRateLimitingQueueConfig[object.Ref]{Name: "writer", Clock: clk, MetricsProvider: opts.QueueMetrics},
		),
		pending:    map[object.Ref]*pendingItem{},
		recent:     newRecent(opts.Debounce),
		hashes:     map[string]storedState{},
		foreign:    map[uint64]struct{}{},
		keySeed:    maphash.MakeSeed(),
		forced:     map[object.Ref]forcedItem{},
		unstorable: map[string]bool{},
		abandon:    make(chan struct{}),
	}
	return w
}

// Seed learns what the store holds under the cluster's prefix, so that a
// restart over an unchanged cluster writes nothing. It keeps the digest of
// each of this cluster's keys, a hash of each key another cluster wrote,
// and nothing of keys outside the layout, which it never touches.
func (w *Writer) Seed(ctx context.Context) (Seeded, error) {
	var n Seeded
	w.mu.Lock()
	id := w.identity
	w.mu.Unlock()
	hashes, foreign := map[string]storedState{}, map[uint64]struct{}{}
	var unvouched []object.Stored // listed without metadata
	bare := false
	err := w.store.Walk(ctx, w.opts.Layout.Root(), func(s object.Stored) error {
		switch _, ours := w.opts.Layout.Parse(s.Key); {
		case s.Key == w.opts.Layout.IdentityKey():
			// Written with its owner's metadata just before: a listing
			// that does not show it carries no metadata at all.
			bare = bare || s.Meta.ClusterUID == ""
		case s.Key == w.opts.Layout.IndexKey():
		case s.Key == w.opts.Layout.PackKey():
			n.Pack = true
		case !ours:
			n.Outside++
		case !id.Owns(s.Meta.ClusterUID):
			foreign[w.keyHash(s.Key)] = struct{}{}
		case s.Meta.Fingerprint() == "" && s.Meta.ClusterUID == "":
			bare = true
			unvouched = append(unvouched, object.Stored{Key: s.Key, ETag: s.ETag, Size: s.Size})
			hashes[s.Key] = storedState{} // unknown unless the index vouches
		case w.opts.Signer.Check(s.Key, s.Meta) != nil:
			hashes[s.Key] = storedState{} // not what this installation signed: written again
		default:
			hashes[s.Key] = storedState{sum: digest(s.Meta.Fingerprint())}
		}
		return nil
	})
	if err != nil {
		w.metrics.Error(logging.OpStoreList)
		return n, err
	}
	// Only a store whose listings carry no metadata has an index to read.
	if bare {
		idx := w.loadIndex(ctx)
		for _, s := range unvouched {
			e, ok := idx[s.Key]
			if fp := known(s, e, ok); fp != "" {
				hashes[s.Key] = storedState{sum: digest(fp), etag: s.ETag, size: s.Size}
				n.Indexed++
			}
		}
	}
	n.Own, n.Foreign, n.BareListings = len(hashes), len(foreign), bare
	w.mu.Lock()
	w.hashes, w.foreign, w.bareListings = hashes, foreign, bare
	w.mu.Unlock()
	return n, nil
}

func (w *Writer) keyHash(key string) uint64 { return maphash.String(w.keySeed, key) }

// Pause stops every write and delete (each key is left as it is, Kept)
// until Resume: the prefix is another cluster's now.
func (w *Writer) Pause() { w.paused.Store(true) }

// Resume lets writes go on after Pause; a full pass repairs what changed
// meanwhile.
func (w *Writer) Resume() { w.paused.Store(false) }

// Paused says whether writes are paused.
func (w *Writer) Paused() bool { return w.paused.Load() }

// SetIdentity sets the cluster that owns the prefix: its UID is stamped
// on every write, and keys stored by a cluster it neither is nor adopted
// are never written over or deleted. Call it before Seed.
func (w *Writer) SetIdentity(id object.Identity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.identity = id
}

// Walk visits what the writer knows the store to hold of this cluster's
// under prefix: the Seed listing, updated by its own writes and deletes
// since. The snapshot pass right after start-up reads it instead of
// listing the store again moments after Seed did. Each entry's metadata
// carries only the fingerprint (in SHA256); keys of other clusters and
// outside the layout are not visited (a pass never touches them).
func (w *Writer) Walk(_ context.Context, prefix string, visit func(object.Stored) error) error {
	w.mu.Lock()
	var out []object.Stored
	for key, st := range w.hashes {
		if strings.HasPrefix(key, prefix) {
			out = append(out, object.Stored{Key: key, Meta: object.Meta{SHA256: hex.EncodeToString(st.sum[:])}})
		}
	}
	w.mu.Unlock()
	for _, s := range out {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue records a change of ref, seen now. It never blocks.
func (w *Writer) Enqueue(ref object.Ref) {
	now := w.clock.Now()
	w.mu.Lock()
	p, ok := w.pending[ref]
	if !ok {
		if len(w.pending) >= w.opts.MaxPending {
			w.mu.Unlock()
			if !w.overflowed.Swap(true) {
				w.log.Warn("Write queue is full; changes are dropped until the next snapshot pass repairs them",
					logging.Op(logging.OpObjectWrite), logging.Data(map[string]any{"max_pending": w.opts.MaxPending}))
			}
			w.metrics.Error(logging.OpQueueOverflow)
			return
		}
		p = &pendingItem{first: now, due: w.recent.due(ref, now)}
		w.pending[ref] = p
	}
	w.setDepth()
	due := p.due
	w.mu.Unlock()
	switch {
	case ok:
		// The pending write reads the object's newest state.
	case due.After(now):
		w.queue.AddAfter(ref, due.Sub(now))
	default:
		w.queue.Add(ref)
	}
}

// setDepth exports the number of pending keys. It runs under w.mu, so that
// the gauge's updates land in the order the queue changed: set after the
// lock, a stale count could land last and stay while the queue is empty.
func (w *Writer) setDepth() {
	w.metrics.QueueDepth.Set(float64(len(w.pending)))
}

// Offer queues ref to be written at once, without a debounce window, unless
// offerWindow batches of keys are already pending. It reports whether it
// did. The informers offer the objects of their first list as they stream
// in; what the writer cannot take then, the snapshot pass that follows
// writes, so the queue stays small however large the cluster.
func (w *Writer) Offer(ref object.Ref) bool {
	now := w.clock.Now()
	w.mu.Lock()
	if _, ok := w.pending[ref]; ok {
		w.mu.Unlock()
		return true
	}
	if len(w.pending) >= offerWindow*w.opts.Workers || len(w.pending) >= w.opts.MaxPending {
		w.mu.Unlock()
		return false
	}
	w.pending[ref] = &pendingItem{first: now, due: now}
	w.setDepth()
	w.mu.Unlock()
	w.queue.Add(ref)
	return true
}

// Seq returns the writer's write sequence number. A caller that lists the
// store passes the number it read before listing to Apply, so that keys the
// writer has written since are not written again.
func (w *Writer) Seq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// Apply handles refs at once, bypassing the debounce window: each present
// object is put and each absent one is deleted, unless the writer itself
// wrote the same bytes after since (the listing the caller compared with is
// older than that write). It goes through the same queue as watch events, so
// it never races a debounced write of the same key, and whichever runs last
// writes the newest cached state. It returns each ref's outcome, or Failed
// for those still waiting when ctx ends.
func (w *Writer) Apply(ctx context.Context, refs []object.Ref, since uint64) []Outcome {
	now := w.clock.Now()
	chans := make([]chan Outcome, len(refs))
	w.mu.Lock()
	for i, ref := range refs {
		ch := make(chan Outcome, 1)
		chans[i] = ch
		w.forced[ref] = forcedItem{done: ch, since: since}
		if _, ok := w.pending[ref]; !ok {
			w.pending[ref] = &pendingItem{first: now, due: now}
		}
	}
	w.setDepth()
	w.mu.Unlock()
	for _, ref := range refs {
		w.queue.Add(ref)
	}
	out := make([]Outcome, len(refs))
	for i, ch := range chans {
		select {
		case out[i] = <-ch:
		case <-ctx.Done():
			out[i] = Failed
		}
	}
	return out
}

// Overflowed reports, and clears, whether changes were dropped since the
// last call; the snapshot pass repairs them.
func (w *Writer) Overflowed() bool { return w.overflowed.Swap(false) }

// Pending returns the number of keys waiting to be written.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Run writes the state that src renders until ctx is cancelled, then
// flushes what is pending for at most flushTimeout and returns.
func (w *Writer) Run(ctx context.Context, src Source, flushTimeout time.Duration) {
	w.mu.Lock()
	w.src = src
	w.mu.Unlock()
	// Store calls get their own context so that they outlive ctx during
	// the flush, and are cut off when the flush deadline passes.
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	var wg sync.WaitGroup
	for range w.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.processNext(callCtx) {
			}
		}()
	}
	// stopNow ends every store call and the queue without a flush.
	stopNow := func() {
		cancelCalls()
		w.queue.ShutDown()
	}
	select {
	case <-ctx.Done():
	case <-w.abandon:
		stopNow()
		wg.Wait()
		return
	}

	// Flush: everything pending is due now.
	w.mu.Lock()
	w.flushing = true
	refs := make([]object.Ref, 0, len(w.pending))
	for ref := range w.pending {
		refs = append(refs, ref)
	}
	w.mu.Unlock()
	for _, ref := range refs {
		w.queue.Add(ref)
	}
	drained := make(chan struct{})
	go func() {
		w.queue.ShutDownWithDrain()
		close(drained)
	}()
	t := w.clock.NewTimer(flushTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C():
		left := w.Pending()
		w.log.Warn("Flush deadline passed; the next snapshot pass writes what is left",
			logging.Op(logging.OpObjectWrite), logging.Data(map[string]any{"pending": left}))
		stopNow()
	case <-w.abandon:
		left := w.Pending()
		w.log.Warn("Writes abandoned: another replica may be writing now; its first pass writes what is left",
			logging.Op(logging.OpObjectWrite), logging.Data(map[string]any{"pending": left}))
		stopNow()
	}
	wg.Wait()
}

// Abandon stops every write at once, in flight or pending, and makes the
// flush of Run end without writing: a replica that lost its lease must not
// write after a new leader has taken over.
func (w *Writer) Abandon() {
	w.abandonOnce.Do(func() { close(w.abandon) })
}

func (w *Writer) processNext(ctx context.Context) bool {
	ref, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(ref)

	w.mu.Lock()
	p := w.pending[ref]
	if p == nil {
		w.mu.Unlock()
		w.queue.Forget(ref)
		return true
	}
	force, forced := w.forced[ref]
	now := w.clock.Now()
	if !w.flushing && !forced && now.Before(p.due) {
		w.mu.Unlock()
		w.queue.AddAfter(ref, p.due.Sub(now))
		return true
	}
	seen := p.first
	delete(w.pending, ref)
	delete(w.forced, ref)
	// A change seen from here on waits for the end of the window this
	// write opens.
	replaced := w.recent.mark(ref, now)
	w.setDepth()
	w.mu.Unlock()

	outcome, err := w.sync(ctx, ref, seen, forced, force.since)
	// Apply hears a failure only once its retries are spent.
	retrying := err != nil && ctx.Err() == nil && !w.spent(ref)
	if force.done != nil && !retrying {
		force.done <- outcome
	}
	if outcome != Written && outcome != Deleted {
		w.mu.Lock()
		w.recent.undo(ref, now, replaced)
		w.mu.Unlock()
	}
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		// Keep the key pending (with its original time) and try again
		// later; a change that arrived meanwhile is already pending.
		w.mu.Lock()
		if _, ok := w.pending[ref]; !ok {
			w.pending[ref] = &pendingItem{first: seen, due: seen}
		}
		if retrying && force.done != nil {
			if _, again := w.forced[ref]; again {
				force.done <- outcome // a newer Apply waits on the same key
			} else {
				w.forced[ref] = force
			}
		}
		w.setDepth()
		w.mu.Unlock()
		w.queue.AddRateLimited(ref)
		return true
	}
	w.queue.Forget(ref)
	return true
}

// sync makes the store hold the object's current state. It returns an error
// only when a store call failed and the key must be tried again. forced
// trusts only the writer's own writes after since: the caller has seen the
// store differ in an older listing.
func (w *Writer) sync(ctx context.Context, ref object.Ref, seen time.Time, forced bool, since uint64) (Outcome, error) {
	key := w.opts.Layout.Key(ref)
	resource := ref.Segment()
	// Built only when a line is logged: most writes log nothing.
	log := func() *zap.Logger { return w.log.With(logging.Namespace(ref.Namespace), logging.Resource(resource)) }
	w.mu.Lock()
	src := w.src
	w.mu.Unlock()
	if w.paused.Load() {
		return Kept, nil // another cluster owns the prefix now: nothing is written
	}
	doc, state, err := src.Document(ref)
	if err != nil {
		return w.invalid(log, ref, resource, err), nil
	}
	switch state {
	case object.Unknown:
		// Not known to be gone: the pass that follows its type's list
		// writes it, or finds it gone.
		return Kept, nil
	case object.Absent:
		if !forced && !w.stored(key) {
			return Absent, nil
		}
		return w.remove(ctx, log, ref, key, seen)
	}
	if st := w.state(key); st.sum == digest(doc.Meta.Fingerprint()) && st.sum != ([sha256.Size]byte{}) && (!forced || st.seq > since) {
		w.metrics.Resources.WithLabelValues(resource, metrics.Unchanged).Inc()
		return Unchanged, nil
	}
	if err := src.Check(ref, doc); err != nil {
		return w.invalid(log, ref, resource, err), nil
	}
	if w.isUnstorable(key) {
		w.metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
		return Unstorable, nil
	}
	return w.put(ctx, log, ref, key, doc, seen)
}

// remove deletes the stored key of an object that is gone, unless it is
// another cluster's or deletes are held back.
func (w *Writer) remove(ctx context.Context, log func() *zap.Logger, ref object.Ref, key string, seen time.Time) (Outcome, error) {
	resource := ref.Segment()
	if w.state(key).foreign {
		return Kept, nil // another cluster's object
	}
	if reason := w.opts.Holds.Reason(); reason != "" {
		w.holdOnce.Do(func() {
			log().Warn("Deletes are held back; stored objects stay", logging.Op(logging.OpObjectDelete),
				logging.Data(map[string]any{"key": key, "reason": reason}))
		})
		return Kept, nil
	}
	start := w.clock.Now()
	if err := w.call(ctx, func(ctx context.Context) error { return w.direct.Delete(ctx, key) }); errors.Is(err, ErrLocked) {
		// A lock or legal hold keeps it: retried by no one, kept.
		w.metrics.Error(logging.OpObjectDelete)
		log().Warn("The store's Object Lock keeps the object; it stays", logging.Op(logging.OpObjectDelete), zap.Error(err), logging.Data(map[string]any{"key": key}))
		return Kept, nil
	} else if err != nil {
		return Failed, w.failed(log, ref, logging.OpObjectDelete, "Failed to delete object", key, err)
	}
	w.forget(key)
	w.metrics.Resources.WithLabelValues(resource, metrics.Deleted).Inc()
	w.metrics.ChangeLatency.Observe(w.clock.Since(seen).Seconds())
	if ce := w.log.Check(zap.DebugLevel, "Object deleted"); ce != nil {
		ce.Write(logging.Namespace(ref.Namespace), logging.Resource(resource), logging.Op(logging.OpObjectDelete), logging.Duration(w.clock.Since(start)), logging.Data(map[string]any{"key": key}))
	}
	return Deleted, nil
}

// put stores doc under key, stamped with the cluster's identity.
func (w *Writer) put(ctx context.Context, log func() *zap.Logger, ref object.Ref, key string, doc object.Document, seen time.Time) (Outcome, error) {
	resource := ref.Segment()
	start := w.clock.Now()
	w.mu.Lock()
	doc.Meta.ClusterUID = w.identity.UID
	w.mu.Unlock()
	doc.Meta.Integrity = w.opts.Signer.Sign(key, doc.Meta)
	if err := w.call(ctx, func(ctx context.Context) error { return w.direct.Put(ctx, key, doc.Body, doc.Meta) }); errors.Is(err, ErrUnstorable) {
		w.mu.Lock()
		w.unstorable[key] = true
		w.mu.Unlock()
		w.metrics.Error(logging.OpObjectWrite)
		w.metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
		log().Error("Object can never be stored under its key; skipped until it changes name", logging.Op(logging.OpObjectWrite),
			zap.Error(err), logging.Data(map[string]any{"name": ref.Name, "reason": "key_unstorable", "key_bytes": len(key)}))
		return Unstorable, nil
	} else if err != nil {
		return Failed, w.failed(log, ref, logging.OpObjectWrite, "Failed to write object", key, err)
	}
	w.remember(key, doc.Meta.Fingerprint(), doc.Body)
	w.metrics.Resources.WithLabelValues(resource, metrics.Written).Inc()
	w.metrics.ChangeLatency.Observe(w.clock.Since(seen).Seconds())
	if ce := w.log.Check(zap.DebugLevel, "Object written"); ce != nil {
		ce.Write(logging.Namespace(ref.Namespace), logging.Resource(resource), logging.Op(logging.OpObjectWrite),
			logging.Duration(w.clock.Since(start)), logging.Data(map[string]any{"key": key, "bytes": len(doc.Body)}))
	}
	return Written, nil
}

// call makes one store call, bounded by CallTimeout.
func (w *Writer) call(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
	defer cancel()
	return f(ctx)
}

// spent reports whether ref has failed RetryAttempts times in a row
// before the failure at hand.
func (w *Writer) spent(ref object.Ref) bool {
	return w.queue.NumRequeues(ref) >= w.opts.RetryAttempts
}

// failed handles a failed store call of ref: counted and logged as an
// error once its retries are spent, at debug level before. The key stays
// queued either way.
func (w *Writer) failed(log func() *zap.Logger, ref object.Ref, op logging.Operation, msg, key string, err error) error {
	data := logging.Data(map[string]any{"key": key, "failures": w.queue.NumRequeues(ref) + 1})
	if !w.spent(ref) {
		log().Debug(msg+"; retrying", logging.Op(op), zap.Error(err), data)
		return err
	}
	w.metrics.Error(op)
	log().Error(msg, logging.Op(op), zap.Error(err), data)
	return err
}

// invalid counts an object that cannot be stored; whatever the store holds
// for it (the last good state) stays.
func (w *Writer) invalid(log func() *zap.Logger, ref object.Ref, resource string, err error) Outcome {
	reason := encode.Reason(err)
	data := logging.Data(map[string]any{"name": ref.Name, "reason": reason})
	if w.opts.Settings.SkipInvalid() {
		w.metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
		log().Warn("Object skipped", logging.Op(logging.OpResourceFilter), zap.Error(err), data)
	} else {
		w.metrics.Error(logging.OpObjectEncode)
		log().Error("Object cannot be stored", logging.Op(logging.OpObjectWrite), zap.Error(err), data)
	}
	if reason == encode.ReasonTooLarge {
		return Skipped
	}
	return Invalid
}

func (w *Writer) state(key string) storedState {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.hashes[key]
	_, st.foreign = w.foreign[w.keyHash(key)]
	return st
}

func (w *Writer) isUnstorable(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unstorable[key]
}

func (w *Writer) stored(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.hashes[key]
	_, foreign := w.foreign[w.keyHash(key)]
	return ok || foreign
}

func (w *Writer) remember(key, sum string, body []byte) {
	w.mu.Lock()
	w.seq++
	st := storedState{sum: digest(sum), seq: w.seq}
	if w.bareListings {
		st.etag, st.size = object.ETag(body), int64(len(body))
	}
	w.hashes[key] = st
	delete(w.foreign, w.keyHash(key)) // ours now
	w.mu.Unlock()
}

// Stores says whether the writer knows key to hold the document with this
// fingerprint: its own write of it, or a listing that showed it.
func (w *Writer) Stores(key, fingerprint string) bool {
	st := w.state(key)
	return !st.foreign && st.sum != ([sha256.Size]byte{}) && st.sum == digest(fingerprint)
}

// ClusterUID is the identity stamped on every write.
func (w *Writer) ClusterUID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.identity.UID
}

// Forget drops what the writer knows of key's stored state: the next Apply
// of its object writes it, whatever it held.
func (w *Writer) Forget(key string) { w.forget(key) }

func (w *Writer) forget(key string) {
	w.mu.Lock()
	delete(w.hashes, key)
	w.mu.Unlock()
}
