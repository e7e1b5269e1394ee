package restore

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestAdaptiveConcurrency(t *testing.T) {
	clock := time.Unix(1_800_000_000, 0)
	a := newAdaptive(8)
	a.now = func() time.Time { return clock }
	ctx := context.Background()

	for range 8 {
		if !a.acquire(ctx) {
			t.Fatal("acquire failed below the limit")
		}
	}
	blocked, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if a.acquire(blocked) {
		t.Fatal("a ninth write went in flight with a limit of 8")
	}

	// A slow write halves the limit; a second one within slowAfter does not.
	a.release(2*time.Second, nil)
	a.release(2*time.Second, nil)
	if got := a.current(); got != 4 {
		t.Fatalf("after slow writes: limit %d, want 4", got)
	}
	clock = clock.Add(slowAfter)
	tooMany := apierrors.NewTooManyRequests("slow down", 1)
	a.release(10*time.Millisecond, tooMany)
	if got := a.current(); got != 2 {
		t.Fatalf("after a 429: limit %d, want 2", got)
	}
	for range 5 {
		a.release(10*time.Millisecond, nil) // drain the rest in flight
	}
	// It grows by one after each run of as many fast writes as the limit.
	for range 2 + 3 + 4 + 5 + 6 + 7 + 20 {
		if !a.acquire(ctx) {
			t.Fatal("acquire failed")
		}
		a.release(10*time.Millisecond, nil)
	}
	if got := a.current(); got != 8 {
		t.Errorf("after fast writes: limit %d, want back at the maximum 8", got)
	}
	// Other errors (an invalid object) say nothing of the load.
	a.acquire(ctx)
	a.release(10*time.Millisecond, apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil))
	if got := a.current(); got != 8 {
		t.Errorf("an invalid object changed the limit to %d", got)
	}
}
