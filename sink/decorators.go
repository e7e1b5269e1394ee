package sink

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cluster-backup/cluster-backup/object"
)

// WithRetry retries failed calls with exponential backoff and jitter,
// starting at delay, up to attempts more times. A failed call is an unknown
// outcome (the write may have landed), which is fine: every call is
// idempotent. Permanent errors and a cancelled context are not retried.
func WithRetry(s Store, attempts int, delay time.Duration) Store {
	if attempts <= 0 {
		return s
	}
	return &retrying{Store: s, backoff: wait.Backoff{
		Duration: delay,
		Factor:   2,
		Jitter:   0.2,
		Steps:    attempts + 1,
		Cap:      5 * time.Minute,
	}}
}

type retrying struct {
	Store
	backoff wait.Backoff
}

// withoutRetry returns s without the retries of WithRetry, for a caller
// that owns its retries (the Writer's queue).
func withoutRetry(s Store) Store {
	if r, ok := s.(*retrying); ok {
		return r.Store
	}
	return s
}

func (r *retrying) do(ctx context.Context, call func() error) error {
	b := r.backoff
	var last error
	for {
		last = call()
		if last == nil || errors.Is(last, ErrPermanent) || ctx.Err() != nil {
			return last
		}
		if b.Steps <= 1 {
			return last
		}
		t := time.NewTimer(b.Step())
		select {
		case <-ctx.Done():
			t.Stop()
			return last
		case <-t.C:
		}
	}
}

func (r *retrying) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	return r.do(ctx, func() error { return r.Store.Put(ctx, key, body, meta) })
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return r.do(ctx, func() error { return r.Store.Delete(ctx, key) })
}

// Get retries a failing read; a missing key is an answer, not retried.
func (r *retrying) Get(ctx context.Context, key, id string) (body []byte, meta object.Meta, err error) {
	var missing error
	err = r.do(ctx, func() error {
		body, meta, err = r.Store.Get(ctx, key, id)
		if errors.Is(err, ErrNotFound) {
			missing = err
			return nil
		}
		return err
	})
	if missing != nil {
		return nil, meta, missing
	}
	return body, meta, err
}

// Walk retries the whole listing; visit may see keys again.
func (r *retrying) Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error {
	return r.do(ctx, func() error { return r.Store.Walk(ctx, prefix, visit) })
}

// WithRateLimit holds writes and deletes to the limiter's rate, to spare a
// shared object store. A nil limiter returns s unchanged.
func WithRateLimit(s Store, l *rate.Limiter) Store {
	if l == nil {
		return s
	}
	return &limited{Store: s, l: l}
}

type limited struct {
	Store
	l *rate.Limiter
}

func (s *limited) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	if err := s.l.Wait(ctx); err != nil {
		return err
	}
	return s.Store.Put(ctx, key, body, meta)
}

func (s *limited) Delete(ctx context.Context, key string) error {
	if err := s.l.Wait(ctx); err != nil {
		return err
	}
	return s.Store.Delete(ctx, key)
}

// Health remembers whether the store's last call succeeded, for /readyz:
// from a failed call until the next successful one the store is not ready.
type Health struct {
	Store
	failing atomic.Bool
	up      interface{ Set(float64) }
}

// WithHealth wraps s so that its calls update the health state, mirrored
// in the gauge up (1 healthy, 0 failing).
func WithHealth(s Store, up interface{ Set(float64) }) *Health { return &Health{Store: s, up: up} }

// Healthy reports whether the last call succeeded.
func (h *Health) Healthy() bool { return !h.failing.Load() }

func (h *Health) record(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrUnstorable):
		// A key the store can never hold says nothing of its health.
		h.failing.Store(false)
		h.up.Set(1)
	case !errors.Is(err, context.Canceled):
		h.failing.Store(true)
		h.up.Set(0)
	}
	return err
}

// Put records the outcome of the underlying Put.
func (h *Health) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	return h.record(h.Store.Put(ctx, key, body, meta))
}

// Delete records the outcome of the underlying Delete.
func (h *Health) Delete(ctx context.Context, key string) error {
	return h.record(h.Store.Delete(ctx, key))
}

// Get records the outcome of the underlying Get; a missing key is no
// failure of the store.
func (h *Health) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	body, meta, err := h.Store.Get(ctx, key, id)
	if errors.Is(err, ErrNotFound) {
		return body, meta, err
	}
	return body, meta, h.record(err)
}

// Walk records the outcome of the underlying Walk.
func (h *Health) Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error {
	return h.record(h.Store.Walk(ctx, prefix, visit))
}
