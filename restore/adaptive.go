package restore

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// adaptive bounds the writes in flight: it starts at the most allowed and
// halves when the API server pushes back (a 429, or writes that have grown
// slow: client-go waits out a 429's Retry-After inside the call), then
// grows by one after each run of that many fast writes, as TCP does.
type adaptive struct {
	mu       sync.Mutex
	cond     *sync.Cond
	limit    int // writes allowed in flight now
	max      int
	inFlight int
	fast     int       // fast writes since the limit last changed
	lastCut  time.Time // the limit is cut at most once per slowAfter
	now      func() time.Time
	changed  func(limit int) // called, with mu held, when the limit moves
}

// slowAfter is how long a write may take before it counts as the API server
// pushing back.
const slowAfter = time.Second

func newAdaptive(limit int) *adaptive {
	a := &adaptive{limit: max(1, limit), max: max(1, limit), now: time.Now}
	a.cond = sync.NewCond(&a.mu)
	return a
}

// acquire waits for a slot; it returns false when ctx ends.
func (a *adaptive) acquire(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		a.mu.Lock()
		a.cond.Broadcast()
		a.mu.Unlock()
	})
	defer stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.inFlight >= a.limit {
		if ctx.Err() != nil {
			return false
		}
		a.cond.Wait()
	}
	a.inFlight++
	return true
}

// release frees a slot and learns from how the write went.
func (a *adaptive) release(took time.Duration, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	switch {
	case apierrors.IsTooManyRequests(err) || took > slowAfter:
		if now := a.now(); now.Sub(a.lastCut) >= slowAfter {
			a.lastCut = now
			a.limit = max(1, a.limit/2)
			a.fast = 0
			a.notify()
		}
	case err == nil:
		a.fast++
		if a.fast >= a.limit && a.limit < a.max {
			a.limit++
			a.fast = 0
			a.notify()
		}
	}
	a.cond.Broadcast()
}

func (a *adaptive) notify() {
	if a.changed != nil {
		a.changed(a.limit)
	}
}

// current is the limit now.
func (a *adaptive) current() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}
