package sink

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/journal"
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
	Settings *object.Settings
	// QueueMetrics, when set, exports the queue's workqueue metrics.
	QueueMetrics workqueue.MetricsProvider
	// Holds, when set, can hold every delete back (a foreign cluster's
	// prefix, an unversioned bucket).
	Holds *object.Holds
	// Signer, when set, signs every document written, and a stored
	// document whose tag it does not accept (unsigned, forged) counts as
	// unknown: the next pass writes it again.
	Signer *object.Signer
	// Journal, when set, records every write and delete the store took
	// (the change journal).
	Journal *journal.Recorder
}

// Writer is the debounced sink: it writes a first change at once and
// collapses the changes to one object that follow inside its window into
// one write of its latest state, skips writes whose bytes the
// store already holds, and keeps failed keys queued until the store is back.
type Writer struct {
	store   Store
	direct  Store // store without WithRetry, for the writes the queue retries
	ledger  *Ledger
	opts    WriterOptions
	log     *zap.Logger
	metrics *metrics.Metrics
	clock   clock.WithTicker
	paused  atomic.Bool // Pause

	queue workqueue.TypedRateLimitingInterface[object.Ref]

	mu       sync.Mutex
	src      Source
	pending  map[object.Ref]*pendingItem
	recent   *recent // when each object was last written, for its window
	forced   map[object.Ref]forcedItem
	flushing bool

	overflowed  atomic.Bool
	holdOnce    sync.Once
	abandon     chan struct{}
	abandonOnce sync.Once
}

// forcedItem is a key that Apply wants handled now.
type forcedItem struct {
	done  chan object.Outcome
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
		pending: map[object.Ref]*pendingItem{},
		recent:  newRecent(opts.Debounce),
		forced:  map[object.Ref]forcedItem{},
		abandon: make(chan struct{}),
		ledger:  NewLedger(store, opts.Layout, opts.Signer, log, m),
	}
	return w
}

// Ledger is what the writer knows the store to hold; its writes keep it.
func (w *Writer) Ledger() *Ledger { return w.ledger }

// Pause stops every write and delete (each key is left as it is, Kept)
// until Resume: the prefix is another cluster's now.
func (w *Writer) Pause() {
	w.paused.Store(true)
	w.ledger.paused.Store(true)
}

// Resume lets writes go on after Pause; a full pass repairs what changed
// meanwhile.
func (w *Writer) Resume() {
	w.paused.Store(false)
	w.ledger.paused.Store(false)
}

// Paused says whether writes are paused.
func (w *Writer) Paused() bool { return w.paused.Load() }

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

// Apply handles refs at once, bypassing the debounce window: each present
// object is put and each absent one is deleted, unless the writer itself
// wrote the same bytes after since (the listing the caller compared with is
// older than that write). It goes through the same queue as watch events, so
// it never races a debounced write of the same key, and whichever runs last
// writes the newest cached state. It returns each ref's outcome, or Failed
// for those still waiting when ctx ends.
func (w *Writer) Apply(ctx context.Context, refs []object.Ref, since uint64) []object.Outcome {
	now := w.clock.Now()
	chans := make([]chan object.Outcome, len(refs))
	w.mu.Lock()
	for i, ref := range refs {
		ch := make(chan object.Outcome, 1)
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
	out := make([]object.Outcome, len(refs))
	for i, ch := range chans {
		select {
		case out[i] = <-ch:
		case <-ctx.Done():
			out[i] = object.Failed
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
	if outcome != object.Written && outcome != object.Deleted {
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
func (w *Writer) sync(ctx context.Context, ref object.Ref, seen time.Time, forced bool, since uint64) (object.Outcome, error) {
	key := w.opts.Layout.Key(ref)
	resource := ref.Segment()
	// Built only when a line is logged: most writes log nothing.
	log := func() *zap.Logger { return w.log.With(logging.Namespace(ref.Namespace), logging.Resource(resource)) }
	w.mu.Lock()
	src := w.src
	w.mu.Unlock()
	if w.paused.Load() {
		return object.Kept, nil // another cluster owns the prefix now: nothing is written
	}
	doc, state, err := src.Document(ref)
	if err != nil {
		return w.invalid(log, ref, resource, err), nil
	}
	switch state {
	case object.Unknown:
		// Not known to be gone: the pass that follows its type's list
		// writes it, or finds it gone.
		return object.Kept, nil
	case object.Absent:
		if !forced && !w.ledger.stored(key) {
			return object.NothingStored, nil
		}
		return w.remove(ctx, log, ref, key, seen)
	}
	if st := w.ledger.state(key); st.sum == digest(doc.Meta.Fingerprint()) && st.sum != ([sha256.Size]byte{}) && (!forced || st.seq > since) {
		w.metrics.Resources.WithLabelValues(resource, metrics.Unchanged).Inc()
		return object.Unchanged, nil
	}
	if err := src.Check(ref, doc); err != nil {
		return w.invalid(log, ref, resource, err), nil
	}
	if w.ledger.isUnstorable(key) {
		w.metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
		return object.Unstorable, nil
	}
	return w.put(ctx, log, ref, key, doc, seen)
}

// remove deletes the stored key of an object that is gone, unless it is
// another cluster's or deletes are held back.
func (w *Writer) remove(ctx context.Context, log func() *zap.Logger, ref object.Ref, key string, seen time.Time) (object.Outcome, error) {
	resource := ref.Segment()
	if w.ledger.state(key).foreign {
		return object.Kept, nil // another cluster's object
	}
	if reason := w.opts.Holds.Reason(); reason != "" {
		w.holdOnce.Do(func() {
			log().Warn("Deletes are held back; stored objects stay", logging.Op(logging.OpObjectDelete),
				logging.Data(map[string]any{"key": key, "reason": reason}))
		})
		return object.Kept, nil
	}
	start := w.clock.Now()
	if err := w.journaled(ctx, journal.Delete, key, object.Meta{}, func(ctx context.Context) error { return w.direct.Delete(ctx, key) }); errors.Is(err, ErrLocked) {
		// A lock or legal hold keeps it: retried by no one, kept.
		w.metrics.Error(logging.OpObjectDelete)
		log().Warn("The store's Object Lock keeps the object; it stays", logging.Op(logging.OpObjectDelete), zap.Error(err), logging.Data(map[string]any{"key": key}))
		return object.Kept, nil
	} else if err != nil {
		return object.Failed, w.failed(log, ref, logging.OpObjectDelete, "Failed to delete object", key, err)
	}
	w.ledger.forget(key)
	w.metrics.Resources.WithLabelValues(resource, metrics.Deleted).Inc()
	w.metrics.ChangeLatency.Observe(w.clock.Since(seen).Seconds())
	if ce := w.log.Check(zap.DebugLevel, "Object deleted"); ce != nil {
		ce.Write(logging.Namespace(ref.Namespace), logging.Resource(resource), logging.Op(logging.OpObjectDelete), logging.Duration(w.clock.Since(start)), logging.Data(map[string]any{"key": key}))
	}
	return object.Deleted, nil
}

// put stores doc under key, stamped with the cluster's identity.
func (w *Writer) put(ctx context.Context, log func() *zap.Logger, ref object.Ref, key string, doc object.Document, seen time.Time) (object.Outcome, error) {
	resource := ref.Segment()
	start := w.clock.Now()
	doc.Meta.ClusterUID = w.ledger.ClusterUID()
	doc.Meta.Integrity = w.opts.Signer.Sign(key, doc.Meta)
	if err := w.journaled(ctx, journal.Put, key, doc.Meta, func(ctx context.Context) error { return w.direct.Put(ctx, key, doc.Body, doc.Meta) }); errors.Is(err, ErrUnstorable) {
		w.ledger.markUnstorable(key)
		w.metrics.Error(logging.OpObjectWrite)
		w.metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
		log().Error("Object can never be stored under its key; skipped until it changes name", logging.Op(logging.OpObjectWrite),
			zap.Error(err), logging.Data(map[string]any{"name": ref.Name, "reason": "key_unstorable", "key_bytes": len(key)}))
		return object.Unstorable, nil
	} else if err != nil {
		return object.Failed, w.failed(log, ref, logging.OpObjectWrite, "Failed to write object", key, err)
	}
	w.ledger.remember(key, doc.Meta.Fingerprint(), doc.Body)
	w.metrics.Resources.WithLabelValues(resource, metrics.Written).Inc()
	w.metrics.ChangeLatency.Observe(w.clock.Since(seen).Seconds())
	if ce := w.log.Check(zap.DebugLevel, "Object written"); ce != nil {
		ce.Write(logging.Namespace(ref.Namespace), logging.Resource(resource), logging.Op(logging.OpObjectWrite),
			logging.Duration(w.clock.Since(start)), logging.Data(map[string]any{"key": key, "bytes": len(doc.Body)}))
	}
	return object.Written, nil
}

// journaled makes the store call f of key (call), and records it in the
// change journal when the store took it.
func (w *Writer) journaled(ctx context.Context, op, key string, meta object.Meta, f func(context.Context) error) error {
	token := w.opts.Journal.Begin()
	err := w.call(ctx, f)
	var e *journal.Entry
	if err == nil {
		e = &journal.Entry{Op: op, Key: strings.TrimPrefix(key, w.opts.Layout.Root()), ResourceVersion: meta.ResourceVersion, Manager: meta.Manager}
	}
	w.opts.Journal.End(token, e)
	return err
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
func (w *Writer) invalid(log func() *zap.Logger, ref object.Ref, resource string, err error) object.Outcome {
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
		return object.Skipped
	}
	return object.Invalid
}
