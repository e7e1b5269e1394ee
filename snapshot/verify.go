package snapshot

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
)

// Reader reads one stored object back.
type Reader interface {
	Get(ctx context.Context, key, id string) ([]byte, object.Meta, error)
}

// Verify reads back a share of the stored objects in each pass and
// re-hashes them, so that every object is checked at least once per
// Interval (VERIFY_INTERVAL): a file altered in the store, or damaged
// there, is found and written again from the caches.
type Verify struct {
	Reader Reader
	// Interval is the period in which every stored object is read once.
	Interval time.Duration
	// Period is the time between two passes (SNAPSHOT_INTERVAL): each
	// pass reads Period/Interval of the objects.
	Period time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// share picks the keys this pass reads: a window of the sorted keys whose
// place follows the time within Interval, so that consecutive passes (and
// a restarted service) go round all of them once per Interval.
func (v *Verify) share(keys []string) []string {
	n := len(keys)
	if n == 0 || v.Interval <= 0 {
		return nil
	}
	frac := 1.0
	if v.Period > 0 && v.Period < v.Interval {
		frac = float64(v.Period) / float64(v.Interval)
	}
	count := min(n, int(math.Ceil(frac*float64(n)))+1)
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	phase := float64(now().UnixNano()%int64(v.Interval)) / float64(v.Interval)
	start := int(phase * float64(n))
	slices.Sort(keys)
	out := make([]string, 0, count)
	for i := range count {
		out = append(out, keys[(start+i)%n])
	}
	return out
}

// verify reads the pass's share of the stored objects and returns the keys
// whose bytes no longer match the SHA-256 recorded when they were written,
// or, stored in the clear, the fingerprint the caches hold for them. The
// writer forgets what it knew of those keys, so the pass writes them again.
func (p *Pass) verify(ctx context.Context, log *zap.Logger, have map[string]string) map[string]bool {
	v := p.Verify
	if v == nil || v.Reader == nil {
		return nil
	}
	keys := make([]string, 0, len(have))
	for k := range have {
		keys = append(keys, k)
	}
	todo := v.share(keys)
	altered := map[string]bool{}
	var mu sync.Mutex
	next := make(chan string)
	var wg sync.WaitGroup
	for range max(1, p.BatchSize) {
		wg.Go(func() {
			for key := range next {
				reason := p.check(ctx, key)
				if reason == "" {
					continue
				}
				mu.Lock()
				altered[key] = true
				mu.Unlock()
				p.Metrics.VerifyFailures.Inc()
				log.Warn("Stored object differs from what was written; writing it again", logging.Op(logging.OpObjectVerify),
					logging.Data(map[string]any{"key": key, "reason": reason}))
			}
		})
	}
	for _, k := range todo {
		next <- k
	}
	close(next)
	wg.Wait()
	if len(todo) > 0 {
		log.Info("Verified stored objects", logging.Op(logging.OpObjectVerify),
			logging.Data(map[string]any{"read": len(todo), "stored": len(keys), "altered": len(altered)}))
	}
	return altered
}

// check reads one key back; it returns why the object is to be written
// again, or "".
func (p *Pass) check(ctx context.Context, key string) string {
	body, meta, err := p.Verify.Reader.Get(ctx, key, "")
	switch {
	case errors.Is(err, object.ErrNotFound):
		return "" // deleted since the listing
	case err != nil:
		p.Metrics.Error(logging.OpObjectVerify)
		return ""
	}
	p.Metrics.Verified.Inc()
	// Metadata changed with the content is a difference the listing
	// shows, which the pass repairs anyway.
	switch {
	case meta.SHA256 == "":
		return "no sha256 metadata"
	case object.Digest(body) != meta.SHA256:
		return "content does not match its sha256 metadata"
	}
	return ""
}
