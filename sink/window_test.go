package sink

import (
	"testing"
	"time"
)

func TestRecentWindow(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	w := time.Second
	r := newRecent(w)
	a, b := ref("a"), ref("b")
	if got := r.due(a, t0); !got.Equal(t0) {
		t.Fatalf("a first change is due %v, want now", got)
	}
	r.mark(a, t0)
	if got := r.due(a, t0.Add(300*time.Millisecond)); !got.Equal(t0.Add(w)) {
		t.Errorf("a change inside the window is due %v, want the window's end", got)
	}
	if got := r.due(b, t0.Add(300*time.Millisecond)); !got.Equal(t0.Add(300 * time.Millisecond)) {
		t.Errorf("another object's change is due %v, want now", got)
	}
	// Across a rotation the mark still holds for the rest of its window.
	r.mark(b, t0.Add(900*time.Millisecond))
	if got := r.due(b, t0.Add(1500*time.Millisecond)); !got.Equal(t0.Add(1900 * time.Millisecond)) {
		t.Errorf("after a rotation, b is due %v", got)
	}
	if got := r.due(a, t0.Add(1500*time.Millisecond)); !got.Equal(t0.Add(1500 * time.Millisecond)) {
		t.Errorf("a window later, a is due %v, want now", got)
	}
	// Two windows later nothing is remembered.
	r.due(a, t0.Add(5*time.Second))
	if r.size() != 0 {
		t.Errorf("%d objects remembered two windows after their writes", r.size())
	}
	// A write that stored nothing is taken back.
	at := t0.Add(6 * time.Second)
	prev := r.mark(a, at)
	r.undo(a, at, prev)
	if got := r.due(a, at.Add(time.Millisecond)); !got.Equal(at.Add(time.Millisecond)) {
		t.Errorf("after undo, a is due %v, want now", got)
	}
}

func TestRecentIsBounded(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	r := newRecent(time.Second)
	// 100 writes a second for a minute: at most two windows remembered.
	for i := range 6000 {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		r.mark(ref(string(rune('a'+i%26))+time.Duration(i).String()), now)
		if r.size() > 200 {
			t.Fatalf("%d objects remembered at %v", r.size(), now.Sub(t0))
		}
	}
}
