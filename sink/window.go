package sink

import (
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

// recent remembers when each object was last written, for one debounce
// window: a change to an object written less than a window ago waits for
// the window's end, where the changes of the window become one trailing
// write; any other change is written at once. Two generations of one
// window each bound it by the objects written in the last two windows.
type recent struct {
	window    time.Duration
	since     time.Time // when cur began
	cur, prev map[object.Ref]time.Time
}

func newRecent(window time.Duration) *recent {
	return &recent{window: window, cur: map[object.Ref]time.Time{}}
}

// rotate drops the generation whose writes are all a window old or more.
func (r *recent) rotate(now time.Time) {
	age := now.Sub(r.since)
	if age < r.window {
		return
	}
	r.prev = r.cur
	if age >= 2*r.window {
		r.prev = nil // every write of cur began before now - window
	}
	r.cur = map[object.Ref]time.Time{}
	r.since = now
}

// last returns when ref was last written, zero when not within two windows.
func (r *recent) last(ref object.Ref) time.Time {
	if at, ok := r.cur[ref]; ok {
		return at
	}
	return r.prev[ref]
}

// due returns when a change of ref seen at now is to be written: now, or
// the end of the window its last write opened.
func (r *recent) due(ref object.Ref, now time.Time) time.Time {
	r.rotate(now)
	if at := r.last(ref); !at.IsZero() && now.Sub(at) < r.window {
		return at.Add(r.window)
	}
	return now
}

// mark records a write of ref begun at now and returns the mark it
// replaces, for undo.
func (r *recent) mark(ref object.Ref, now time.Time) time.Time {
	r.rotate(now)
	prev := r.last(ref)
	r.cur[ref] = now
	return prev
}

// undo takes back the mark at of a write that stored nothing (the bytes
// were unchanged, the store failed): the next change is written at once.
func (r *recent) undo(ref object.Ref, at, prev time.Time) {
	for _, m := range []map[object.Ref]time.Time{r.cur, r.prev} {
		if t, ok := m[ref]; ok && t.Equal(at) {
			if prev.IsZero() {
				delete(m, ref)
			} else {
				m[ref] = prev
			}
		}
	}
}

// size returns the number of objects remembered.
func (r *recent) size() int { return len(r.cur) + len(r.prev) }
