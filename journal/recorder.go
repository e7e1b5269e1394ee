package journal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// Putter writes one object (sink.Store's Put).
type Putter interface {
	Put(ctx context.Context, key string, body []byte, meta object.Meta) error
}

// MaxBuffered bounds the entries a Recorder holds while the store refuses
// its flushes; beyond it the oldest are dropped, logged and counted (what
// they name is still in the bucket's versions, and readers repair what the
// journal misses from a full listing).
const MaxBuffered = 200_000

// Recorder collects the service's writes and flushes them as journal
// objects. A nil Recorder records nothing.
type Recorder struct {
	store    Putter
	layout   object.Layout
	signer   *object.Signer
	instance string
	log      *zap.Logger
	metrics  *metrics.Metrics
	now      func() time.Time

	mu       sync.Mutex
	entries  []Entry
	inFlight map[uint64]time.Time // writes begun and not ended, by token
	next     uint64
	dropped  int

	flushing sync.Mutex // one flush at a time: objects are taken in order
}

// NewRecorder returns a Recorder writing layout's journal into store,
// signed by signer (nil: unsigned).
func NewRecorder(store Putter, layout object.Layout, signer *object.Signer, log *zap.Logger, m *metrics.Metrics) *Recorder {
	var id [4]byte
	_, _ = rand.Read(id[:])
	return &Recorder{
		store: store, layout: layout, signer: signer, log: log, metrics: m,
		instance: hex.EncodeToString(id[:]), now: time.Now,
		inFlight: map[uint64]time.Time{},
	}
}

// Begin marks a write about to be made; End takes its token.
func (r *Recorder) Begin() uint64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.inFlight[r.next] = r.now()
	return r.next
}

// End closes the write of token, recording e when the write succeeded
// (nil: it failed, nothing to record).
func (r *Recorder) End(token uint64, e *Entry) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inFlight, token)
	if e == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = r.now()
	}
	r.entries = append(r.entries, *e)
	if over := len(r.entries) - MaxBuffered; over > 0 {
		r.entries = append(r.entries[:0:0], r.entries[over:]...)
		r.dropped += over
	}
}

// Pending is the number of entries not yet flushed.
func (r *Recorder) Pending() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// Flush writes the entries recorded so far as one journal object; nothing
// when there are none. Entries a failed write leaves are kept for the next
// flush.
func (r *Recorder) Flush(ctx context.Context) error {
	if r == nil {
		return nil
	}
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.mu.Lock()
	taken := r.now()
	through := taken
	for _, started := range r.inFlight {
		if started.Before(through) {
			through = started
		}
	}
	entries, dropped := r.entries, r.dropped
	r.entries, r.dropped = nil, 0
	r.mu.Unlock()
	if dropped > 0 {
		r.log.Error("The change journal lost entries while the store refused it; readers repair them from a full listing",
			logging.Op(logging.OpObjectWrite), logging.Data(map[string]any{"entries": dropped}))
		r.metrics.Error(logging.OpObjectWrite)
	}
	if len(entries) == 0 {
		return nil
	}
	key := Name(r.layout, taken, r.instance)
	body := Encode(Object{Through: through, Entries: entries})
	err := r.store.Put(ctx, key, body, object.Meta{SHA256: object.Digest(body), Integrity: r.signer.SignBytes(key, body)})
	if err != nil {
		r.mu.Lock()
		r.entries = append(entries, r.entries...)
		r.mu.Unlock()
		r.metrics.Error(logging.OpObjectWrite)
		return fmt.Errorf("write the change journal: %w", err)
	}
	return nil
}

// Run flushes every interval until ctx ends; the caller flushes once more
// at shutdown.
func (r *Recorder) Run(ctx context.Context, interval time.Duration) {
	if r == nil {
		return
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("Cannot write the change journal; its entries are kept for the next try", zap.Error(err))
		}
	}, interval)
}
