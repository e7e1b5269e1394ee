package sink

import (
	"sort"
	"strings"
	"sync"
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
