package object

import (
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Holds are the standing reasons to delete nothing from the store: the
// cluster prefix belongs to another cluster, or the bucket keeps no
// versions, so a delete could not be undone. Every delete, of the writer
// and of a snapshot pass, consults them. The zero value and nil hold
// nothing.
type Holds struct {
	mu      sync.Mutex
	reasons map[string]string
}

// Set holds deletes back for reason, under name until Clear(name).
func (h *Holds) Set(name, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reasons == nil {
		h.reasons = map[string]string{}
	}
	h.reasons[name] = reason
}

// Clear removes the hold called name.
func (h *Holds) Clear(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.reasons, name)
}

// Reason says why deletes are held back, or "" when they are not.
func (h *Holds) Reason() string {
	if h == nil {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.reasons))
	for _, r := range h.reasons {
		out = append(out, r)
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// Settings are the reloadable settings that the writer and the snapshot
// pass read at each use. One value owns them: a ConfigMap reload sets it
// once, and every reader sees the change. The zero value skips nothing
// and guards nothing (max-prune-fraction 0 holds every delete back).
type Settings struct {
	skipInvalid      atomic.Bool
	maxPruneFraction atomic.Uint64 // float64 bits
}

// NewSettings returns Settings holding skip-invalid-resources and
// max-prune-fraction.
func NewSettings(skipInvalid bool, maxPruneFraction float64) *Settings {
	s := &Settings{}
	s.Set(skipInvalid, maxPruneFraction)
	return s
}

// Set replaces both settings.
func (s *Settings) Set(skipInvalid bool, maxPruneFraction float64) {
	s.skipInvalid.Store(skipInvalid)
	s.maxPruneFraction.Store(math.Float64bits(maxPruneFraction))
}

// SkipInvalid is skip-invalid-resources: an object that cannot be stored
// is skipped and counted rather than an error.
func (s *Settings) SkipInvalid() bool { return s != nil && s.skipInvalid.Load() }

// MaxPruneFraction is max-prune-fraction.
func (s *Settings) MaxPruneFraction() float64 {
	if s == nil {
		return 0
	}
	return math.Float64frombits(s.maxPruneFraction.Load())
}
