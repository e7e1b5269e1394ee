package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// memStore is an in-memory Store that counts calls and can be made to fail.
type memStore struct {
	mu      sync.Mutex
	objects map[string]object.Document
	puts    int
	deletes int
	fail    error
	// failKey fails the next failFor calls of Put for key failKey;
	// attempts counts every Put called.
	failKey  string
	failFor  int
	attempts int
	// bare listings carry no user metadata, as any S3 store's but
	// MinIO's.
	bare bool
}

func newMemStore() *memStore { return &memStore{objects: map[string]object.Document{}} }

func (m *memStore) Put(_ context.Context, key string, body []byte, meta object.Meta) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts++
	if m.fail != nil {
		return m.fail
	}
	if key == m.failKey && m.failFor > 0 {
		m.failFor--
		return errors.New("503 Service Unavailable")
	}
	m.puts++
	m.objects[key] = object.Document{Body: append([]byte(nil), body...), Meta: meta}
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.deletes++
	delete(m.objects, key)
	return nil
}

func (m *memStore) Get(_ context.Context, key, _ string) ([]byte, object.Meta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, object.Meta{}, m.fail
	}
	d, ok := m.objects[key]
	if !ok {
		return nil, object.Meta{}, ErrNotFound
	}
	return append([]byte(nil), d.Body...), d.Meta, nil
}

func (m *memStore) Walk(_ context.Context, prefix string, visit func(object.Stored) error) error {
	m.mu.Lock()
	if m.fail != nil {
		m.mu.Unlock()
		return m.fail
	}
	var out []object.Stored
	for k, d := range m.objects {
		if strings.HasPrefix(k, prefix) {
			s := object.Stored{Key: k, Meta: d.Meta, ETag: object.ETag(d.Body), Size: int64(len(d.Body))}
			if m.bare {
				s.Meta = object.Meta{}
			}
			out = append(out, s)
		}
	}
	m.mu.Unlock()
	for _, s := range out {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// failNext makes the next n Puts of key fail.
func (m *memStore) failNext(key string, n int) {
	m.mu.Lock()
	m.failKey, m.failFor, m.attempts = key, n, 0
	m.mu.Unlock()
}

func (m *memStore) putAttempts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempts
}

func (m *memStore) counts() (puts, deletes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.puts, m.deletes
}

func (m *memStore) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memStore) body(key string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.objects[key]
	return string(d.Body), ok
}

// fakeSource serves documents from a map that tests change.
type fakeSource struct {
	mu   sync.Mutex
	docs map[object.Ref]string
	bad  map[object.Ref]error // Document fails
	// unknown objects are neither present nor known to be gone (their
	// type is not completely listed).
	unknown map[object.Ref]bool
	// unparsable documents fail Check, as validate-yaml would fail them.
	unparsable map[object.Ref]bool
}

func (s *fakeSource) set(ref object.Ref, body string) {
	s.mu.Lock()
	s.docs[ref] = body
	s.mu.Unlock()
}

func (s *fakeSource) remove(ref object.Ref) {
	s.mu.Lock()
	delete(s.docs, ref)
	s.mu.Unlock()
}

func (s *fakeSource) Check(ref object.Ref, _ object.Document) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unparsable[ref] {
		return &encode.InvalidError{Reason: encode.ReasonInvalid, Err: errors.New("does not parse")}
	}
	return nil
}

func (s *fakeSource) Document(ref object.Ref) (object.Document, object.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.bad[ref]; err != nil {
		return object.Document{}, object.Present, err
	}
	if s.unknown[ref] {
		return object.Document{}, object.Unknown, nil
	}
	body, ok := s.docs[ref]
	if !ok {
		return object.Document{}, object.Absent, nil
	}
	return object.Document{Body: []byte(body), Meta: object.Meta{SHA256: object.Digest([]byte(body)), APIVersion: "v1"}}, object.Present, nil
}

type harness struct {
	holds    *object.Holds
	settings *object.Settings
	store    *memStore
	src      *fakeSource
	w        *Writer
	m        *metrics.Metrics
	cancel   context.CancelFunc
	done     chan struct{}
}

func startWriter(t *testing.T, debounce time.Duration, store *memStore) *harness {
	t.Helper()
	return startWriterClock(t, debounce, store, clock.RealClock{})
}

// startWriterClock runs a writer on clk: with a fake clock, no debounce
// window ends until the test steps it.
func startWriterClock(t *testing.T, debounce time.Duration, store *memStore, clk clock.WithTicker) *harness {
	t.Helper()
	return startWriterTuned(t, store, clk, func(o *WriterOptions) { o.Debounce = debounce }, nil)
}

// startWriterTuned runs a writer whose options tune changes, over store as
// wrap decorates it (nil: as it is).
func startWriterTuned(t *testing.T, store *memStore, clk clock.WithTicker, tune func(*WriterOptions), wrap func(Store) Store) *harness {
	t.Helper()
	h := &harness{store: store, src: &fakeSource{docs: map[object.Ref]string{}, bad: map[object.Ref]error{}, unparsable: map[object.Ref]bool{}, unknown: map[object.Ref]bool{}}, done: make(chan struct{})}
	h.m = metrics.New(prometheus.NewRegistry())
	h.holds = &object.Holds{}
	h.settings = object.NewSettings(true, 0.1)
	opts := WriterOptions{
		Layout: testLayout, Workers: 4, RetryDelay: 20 * time.Millisecond, Settings: h.settings,
		Holds: h.holds,
	}
	tune(&opts)
	var decorated Store = store
	if wrap != nil {
		decorated = wrap(store)
	}
	h.w = NewWriter(decorated, opts, zap.NewNop(), h.m, clk)
	if _, err := h.w.Ledger().Seed(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() {
		h.w.Run(ctx, h.src, 5*time.Second)
		close(h.done)
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

func ref(name string) object.Ref {
	return object.Ref{Resource: "configmaps", Namespace: "default", Name: name}
}

var testLayout = object.Layout{Prefix: "clusterbackup", Cluster: "c"}

func keyOf(name string) string { return testLayout.Key(ref(name)) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSettled waits until the writer has handled everything the fake
// clock has made due: nothing is queued, and a pending key waits on a
// timer (the clock's waiters are the queue's heartbeat plus one timer
// while a key is pending).
func waitSettled(t *testing.T, h *harness, fc *clocktesting.FakeClock) {
	t.Helper()
	eventually(t, 5*time.Second, "the writer to settle", func() bool {
		pending := h.w.Pending() > 0
		return h.w.queue.Len() == 0 && pending == (fc.Waiters() == 2)
	})
}

func TestFirstChangeIsWrittenAtOnce(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	debounce := time.Second
	h := startWriterClock(t, debounce, newMemStore(), fc)
	h.src.set(ref("a"), "v0")
	h.w.Enqueue(ref("a"))
	// The clock stands still: the write cannot be waiting for a window.
	eventually(t, 5*time.Second, "the first change written", func() bool { b, _ := h.store.body(keyOf("a")); return b == "v0" })
	waitSettled(t, h, fc)
	if h.w.Pending() != 0 {
		t.Errorf("%d keys pending after the first change was written", h.w.Pending())
	}
	// A change a whole window later opens a new window: written at once.
	fc.Step(debounce)
	h.src.set(ref("a"), "v1")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "a change a window later written", func() bool { b, _ := h.store.body(keyOf("a")); return b == "v1" })
	if p, _ := h.store.counts(); p != 2 {
		t.Errorf("%d writes, want 2", p)
	}
}

func TestBurstBecomesAFirstAndATrailingWrite(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	debounce := time.Second
	h := startWriterClock(t, debounce, newMemStore(), fc)
	r := ref("a")
	h.src.set(r, "v0")
	h.w.Enqueue(r)
	eventually(t, 5*time.Second, "the first change", func() bool { p, _ := h.store.counts(); return p == 1 })
	for i := 1; i < 20; i++ {
		h.src.set(r, fmt.Sprintf("v%d", i))
		h.w.Enqueue(r)
		waitSettled(t, h, fc)
		fc.Step(debounce / 40)
	}
	waitSettled(t, h, fc)
	if p, _ := h.store.counts(); p != 1 || h.w.Pending() != 1 {
		t.Fatalf("inside the window: %d writes, %d pending; want 1 and the rest coalesced", p, h.w.Pending())
	}
	fc.Step(debounce - 19*debounce/40) // the window's end
	eventually(t, 5*time.Second, "the trailing write", func() bool { b, _ := h.store.body(keyOf("a")); return b == "v19" })
	eventually(t, 5*time.Second, "an empty queue", func() bool { return h.w.Pending() == 0 })
	if p, _ := h.store.counts(); p != 2 {
		t.Errorf("20 updates in a window gave %d writes, want 2 (the first and the latest state)", p)
	}
}

func TestBusyObjectIsWrittenOncePerWindow(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	debounce := time.Second
	h := startWriterClock(t, debounce, newMemStore(), fc)
	r := ref("busy")
	// A change every quarter window for 30 windows: never quiet, yet
	// written once per window, never held for many.
	const windows = 30
	for i := range 4 * windows {
		h.src.set(r, fmt.Sprintf("v%d", i))
		h.w.Enqueue(r)
		waitSettled(t, h, fc)
		fc.Step(debounce / 4)
		waitSettled(t, h, fc)
		if p, _ := h.store.counts(); p < (i+1)/4 {
			t.Fatalf("after %d changes over %d windows, %d writes", i+1, (i+1)/4, p)
		}
	}
	if p, _ := h.store.counts(); p < windows || p > windows+1 {
		t.Errorf("an object changing for %d windows was written %d times, want one per window", windows, p)
	}
	// Its last state is written at the end of the window.
	fc.Step(debounce)
	last := fmt.Sprintf("v%d", 4*windows-1)
	eventually(t, 5*time.Second, "the last state", func() bool { b, _ := h.store.body(keyOf("busy")); return b == last })
}

func TestUnchangedWriteDoesNotOpenAWindow(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	store := newMemStore()
	_ = store.Put(context.Background(), keyOf("a"), []byte("same"), object.Meta{SHA256: object.Digest([]byte("same"))})
	store.puts = 0
	h := startWriterClock(t, time.Second, store, fc)
	// A status-only update: the stored bytes do not change.
	h.src.set(ref("a"), "same")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "the unchanged outcome", func() bool {
		return testutil.ToFloat64(h.m.Resources.WithLabelValues("configmaps", metrics.Unchanged)) == 1
	})
	waitSettled(t, h, fc)
	// The change that follows is written at once.
	h.src.set(ref("a"), "new")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "the change after an unchanged write", func() bool { b, _ := h.store.body(keyOf("a")); return b == "new" })
}

func TestUnchangedIsNotWritten(t *testing.T) {
	store := newMemStore()
	body := "same"
	_ = store.Put(context.Background(), keyOf("a"), []byte(body), object.Meta{SHA256: object.Digest([]byte(body))})
	store.puts = 0
	h := startWriter(t, time.Millisecond, store)
	h.src.set(ref("a"), body)
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "unchanged count", func() bool {
		return testutil.ToFloat64(h.m.Resources.WithLabelValues("configmaps", metrics.Unchanged)) == 1
	})
	if p, _ := store.counts(); p != 0 {
		t.Errorf("an unchanged object was written %d times", p)
	}
}

func TestDeletes(t *testing.T) {
	h := startWriter(t, time.Millisecond, newMemStore())
	h.src.set(ref("a"), "x")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "write", func() bool { _, ok := h.store.body(keyOf("a")); return ok })
	h.src.remove(ref("a"))
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "delete", func() bool { _, ok := h.store.body(keyOf("a")); return !ok })
	// An object the store never held is not deleted.
	h.w.Enqueue(ref("never"))
	eventually(t, 5*time.Second, "an empty queue", func() bool { return h.w.Pending() == 0 })
	if _, d := h.store.counts(); d != 1 {
		t.Errorf("deletes = %d, want 1", d)
	}
}

func TestUnknownAndHeldDeletesKeepTheKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unknown bool
		hold    string
		want    object.Outcome
	}{
		{name: "type not completely listed", unknown: true, want: object.Kept},
		{name: "deletes held", hold: "bucket versioning is off", want: object.Kept},
		{name: "absent and nothing held", want: object.Deleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore()
			h := startWriter(t, time.Millisecond, store)
			h.src.set(ref("a"), "x")
			if got := h.w.Apply(context.Background(), []object.Ref{ref("a")}, 0); got[0] != object.Written {
				t.Fatalf("write: %v", got)
			}
			h.src.remove(ref("a"))
			h.src.mu.Lock()
			h.src.unknown[ref("a")] = tc.unknown
			h.src.mu.Unlock()
			if tc.hold != "" {
				h.holds.Set("test", tc.hold)
			}
			if got := h.w.Apply(context.Background(), []object.Ref{ref("a")}, 0); got[0] != tc.want {
				t.Errorf("outcome %v, want %v", got[0], tc.want)
			}
			_, stillStored := store.body(keyOf("a"))
			if stillStored != (tc.want == object.Kept) {
				t.Errorf("stored after the delete: %v", stillStored)
			}
		})
	}
}

// unstorableStore refuses one key for good, as S3 refuses keys over 1,024
// bytes.
type unstorableStore struct {
	*memStore
	calls int
}

func (u *unstorableStore) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	u.mu.Lock()
	u.calls++
	u.mu.Unlock()
	if strings.Contains(key, "/long") {
		return fmt.Errorf("put %s: %w", key, ErrUnstorable)
	}
	return u.memStore.Put(ctx, key, body, meta)
}

func TestUnstorableKeyIsCountedOnceAndNotRetried(t *testing.T) {
	store := &unstorableStore{memStore: newMemStore()}
	m := metrics.New(prometheus.NewRegistry())
	w := NewWriter(store, WriterOptions{Layout: testLayout, Workers: 2, RetryDelay: time.Millisecond},
		zap.NewNop(), m, clock.RealClock{})
	src := &fakeSource{docs: map[object.Ref]string{ref("long"): "x", ref("ok"): "y"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx, src, time.Second); close(done) }()
	defer func() { cancel(); <-done }()
	for range 3 { // three passes
		out := w.Apply(context.Background(), []object.Ref{ref("long"), ref("ok")}, 0)
		if out[0] != object.Unstorable {
			t.Fatalf("unstorable key: outcome %v, want Unstorable", out[0])
		}
	}
	if got := testutil.ToFloat64(m.Errors.WithLabelValues("object_write")); got != 1 {
		t.Errorf("object_write errors %v, want 1", got)
	}
	store.mu.Lock()
	calls := store.calls
	store.mu.Unlock()
	if calls != 2 { // one refused put; the other key is written once, then unchanged
		t.Errorf("%d puts, want 2", calls)
	}
	if w.Pending() != 0 {
		t.Error("the unstorable key stays queued")
	}
}

func TestStoreOutageKeepsChanges(t *testing.T) {
	store := newMemStore()
	h := startWriter(t, time.Millisecond, store)
	store.setFail(errors.New("connection refused"))
	for i := range 10 {
		h.src.set(ref(fmt.Sprint(i)), "x")
		h.w.Enqueue(ref(fmt.Sprint(i)))
	}
	eventually(t, 5*time.Second, "write errors", func() bool {
		return testutil.ToFloat64(h.m.Errors.WithLabelValues("object_write")) >= 10
	})
	if h.w.Pending() != 10 {
		t.Errorf("pending = %d during the outage, want 10", h.w.Pending())
	}
	store.setFail(nil)
	eventually(t, 10*time.Second, "all 10 written", func() bool { p, _ := store.counts(); return p == 10 })
}

func TestInvalidObjectIsSkipped(t *testing.T) {
	h := startWriter(t, time.Millisecond, newMemStore())
	h.src.mu.Lock()
	h.src.bad[ref("big")] = &encode.InvalidError{Reason: encode.ReasonTooLarge, Err: errors.New("too big")}
	h.src.mu.Unlock()
	h.w.Enqueue(ref("big"))
	eventually(t, 5*time.Second, "skip count", func() bool {
		return testutil.ToFloat64(h.m.Resources.WithLabelValues("configmaps", metrics.Skipped)) == 1
	})
	if p, _ := h.store.counts(); p != 0 {
		t.Errorf("invalid object written")
	}
}

func TestUnparsableDocumentIsNotWritten(t *testing.T) {
	store := newMemStore()
	h := startWriter(t, time.Millisecond, store)
	h.settings.Set(false, 0.1) // a reload: the writer reads it at its next use
	h.src.set(ref("a"), "a: 1\n")
	h.src.mu.Lock()
	h.src.unparsable[ref("a")] = true
	h.src.mu.Unlock()
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "encode error counted", func() bool {
		return testutil.ToFloat64(h.m.Errors.WithLabelValues("object_encode")) == 1
	})
	if p, _ := store.counts(); p != 0 {
		t.Errorf("a document that failed the check was written")
	}
	// Once it parses, it is written.
	h.src.mu.Lock()
	h.src.unparsable[ref("a")] = false
	h.src.mu.Unlock()
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "written", func() bool { p, _ := store.counts(); return p == 1 })
}

func TestShutdownFlushesPending(t *testing.T) {
	h := startWriter(t, time.Hour, newMemStore())
	h.src.set(ref("a"), "x")
	h.w.Enqueue(ref("a"))
	h.stop()
	if _, ok := h.store.body(keyOf("a")); !ok {
		t.Error("pending write was not flushed on shutdown")
	}
}

func TestOverflowIsCounted(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	w := NewWriter(newMemStore(), WriterOptions{Debounce: time.Hour, MaxPending: 2}, zap.NewNop(), m, clock.RealClock{})
	for i := range 5 {
		w.Enqueue(ref(fmt.Sprint(i)))
	}
	if got := testutil.ToFloat64(m.Errors.WithLabelValues("queue_overflow")); got != 3 {
		t.Errorf("queue_overflow = %v, want 3", got)
	}
	if !w.Overflowed() || w.Overflowed() {
		t.Error("Overflowed must report once")
	}
	if got := testutil.ToFloat64(m.QueueDepth); got != 2 {
		t.Errorf("queue depth = %v, want 2", got)
	}
}

func TestApplyDoesNotRewriteWhatTheWriterJustWrote(t *testing.T) {
	h := startWriter(t, time.Millisecond, newMemStore())
	since := h.w.Ledger().Seq()
	h.src.set(ref("a"), "x")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "the debounced write", func() bool { p, _ := h.store.counts(); return p == 1 })
	// A pass that listed the store before that write forces the key: the
	// writer knows it already wrote these bytes.
	if got := h.w.Apply(context.Background(), []object.Ref{ref("a")}, since); got[0] != object.Unchanged {
		t.Errorf("outcome %v, want Unchanged", got[0])
	}
	// A listing taken after the write that still differs (the bucket was
	// changed by hand) is repaired.
	if got := h.w.Apply(context.Background(), []object.Ref{ref("a")}, h.w.Ledger().Seq()); got[0] != object.Written {
		t.Errorf("outcome %v, want Written", got[0])
	}
	if p, _ := h.store.counts(); p != 2 {
		t.Errorf("puts = %d, want 2", p)
	}
}

func TestOfferWritesAtOnceWithinAWindow(t *testing.T) {
	store := newMemStore()
	h := startWriter(t, time.Hour, store)
	h.src.set(ref("a"), "a")
	if !h.w.Offer(ref("a")) {
		t.Fatal("offer refused by an empty queue")
	}
	eventually(t, 5*time.Second, "the offered write, long before the debounce window", func() bool {
		_, ok := store.body(keyOf("a"))
		return ok
	})

	// With the store down, offered keys stay pending, and the queue takes
	// no more than its window.
	store.setFail(errors.New("down"))
	accepted := 0
	for i := range 200 {
		r := ref(fmt.Sprint("k", i))
		h.src.set(r, "x")
		if h.w.Offer(r) {
			accepted++
		}
	}
	// The 4 workers' keys in flight are not pending while they are tried.
	if window := offerWindow * 4; accepted < window || accepted > window+4 {
		t.Errorf("offer took %d keys, want the window of %d (+4 in flight)", accepted, window)
	}
	store.setFail(nil)
	// A key in flight is not pending: one whose attempt failed against the
	// store that was down is out of the queue until it is retried.
	// The ledger learns of a write after the store's PUT returns, so wait
	// for both.
	var listed []object.Stored
	eventually(t, 10*time.Second, "the accepted keys written and in the ledger", func() bool {
		p, _ := store.counts()
		if p < accepted+1 || h.w.Pending() != 0 {
			return false
		}
		var err error
		listed, err = List(context.Background(), h.w.Ledger(), "clusterbackup/c/")
		return err == nil && len(listed) >= accepted+1
	})
	if p, _ := store.counts(); p != accepted+1 {
		t.Errorf("%d puts, want %d", p, accepted+1)
	}
	// List reports what the writer knows the store holds.
	if len(listed) != accepted+1 {
		t.Errorf("List has %d keys, want %d", len(listed), accepted+1)
	}
	for _, s := range listed {
		if body, _ := store.body(s.Key); object.Digest([]byte(body)) != s.Meta.SHA256 {
			t.Errorf("List says %s holds %s, the store holds %q", s.Key, s.Meta.SHA256, body)
		}
	}
}

func TestSeedKeepsNothingOfKeysItMayNotTouch(t *testing.T) {
	store := newMemStore()
	theirs := keyOf("theirs")
	store.objects[keyOf("ours")] = object.Document{Body: []byte("x"), Meta: object.Meta{SHA256: object.Digest([]byte("x")), ClusterUID: "ours"}}
	store.objects[theirs] = object.Document{Body: []byte("y"), Meta: object.Meta{SHA256: object.Digest([]byte("y")), ClusterUID: "theirs"}}
	store.objects["clusterbackup/c/junk.bin"] = object.Document{Body: []byte("z")}
	h := startWriter(t, time.Millisecond, store)
	h.w.Ledger().SetIdentity(object.Identity{UID: "ours"})
	seeded, err := h.w.Ledger().Seed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if seeded != (Seeded{Own: 1, Foreign: 1, Outside: 1}) {
		t.Errorf("seeded %+v", seeded)
	}
	listed, _ := List(context.Background(), h.w.Ledger(), testLayout.Root())
	if len(listed) != 1 || listed[0].Key != keyOf("ours") {
		t.Errorf("the writer lists %v, want this cluster's key only", listed)
	}
	// Neither object is in the caches: ours is deleted, theirs is kept.
	got := h.w.Apply(context.Background(), []object.Ref{ref("ours"), ref("theirs")}, 0)
	if got[0] != object.Deleted || got[1] != object.Kept {
		t.Errorf("outcomes %v, want deleted and kept", got)
	}
	if _, ok := store.body(theirs); !ok {
		t.Error("another cluster's key was deleted")
	}
	// Written by this cluster, the key becomes its own.
	h.src.set(ref("theirs"), "mine now")
	if got := h.w.Apply(context.Background(), []object.Ref{ref("theirs")}, 0); got[0] != object.Written {
		t.Fatalf("write: %v", got)
	}
	h.src.remove(ref("theirs"))
	if got := h.w.Apply(context.Background(), []object.Ref{ref("theirs")}, 0); got[0] != object.Deleted {
		t.Errorf("this cluster's own write is not deleted when its object goes: %v", got)
	}
}

// TestAdoptedKeysAreOwn: after a rebuilt cluster adopted the prefix, the
// keys the old cluster wrote are its own (deleted when their object is
// gone), and a third cluster's stay untouched.
func TestAdoptedKeysAreOwn(t *testing.T) {
	store := newMemStore()
	store.objects[keyOf("old")] = object.Document{Body: []byte("x"), Meta: object.Meta{SHA256: object.Digest([]byte("x")), ClusterUID: "old-cluster"}}
	store.objects[keyOf("third")] = object.Document{Body: []byte("y"), Meta: object.Meta{SHA256: object.Digest([]byte("y")), ClusterUID: "third"}}
	h := startWriter(t, time.Millisecond, store)
	h.w.Ledger().SetIdentity(object.Identity{UID: "new-cluster", Adopted: []string{"old-cluster"}})
	seeded, err := h.w.Ledger().Seed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if seeded.Own != 1 || seeded.Foreign != 1 {
		t.Errorf("seeded %+v, want the adopted key own and the third cluster's foreign", seeded)
	}
	got := h.w.Apply(context.Background(), []object.Ref{ref("old"), ref("third")}, 0)
	if got[0] != object.Deleted || got[1] != object.Kept {
		t.Errorf("outcomes %v, want the adopted key deleted and the third cluster's kept", got)
	}
}

func TestBareListingsUseTheIndex(t *testing.T) {
	store := newMemStore()
	store.bare = true
	marker := testLayout.IdentityKey()
	store.objects[marker] = object.Document{Body: []byte("owner"), Meta: object.Meta{ClusterUID: "ours"}}
	h := startWriter(t, time.Millisecond, store)
	h.w.Ledger().SetIdentity(object.Identity{UID: "ours"})
	if seeded, _ := h.w.Ledger().Seed(context.Background()); !seeded.BareListings {
		t.Fatalf("a listing without the marker's metadata was not taken for bare: %+v", seeded)
	}
	for _, n := range []string{"a", "b", "c"} {
		h.src.set(ref(n), "body of "+n)
	}
	refs := []object.Ref{ref("a"), ref("b"), ref("c")}
	if got := h.w.Apply(context.Background(), refs, 0); got[0] != object.Written || got[2] != object.Written {
		t.Fatalf("first writes: %v", got)
	}
	if err := h.w.Ledger().SaveIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.body(testLayout.IndexKey()); !ok {
		t.Fatal("no index written for a store with bare listings")
	}
	puts, _ := store.counts()
	if err := h.w.Ledger().SaveIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again, _ := store.counts(); again != puts {
		t.Error("an unchanged index was written again")
	}
	h.stop()

	// Behind the service's back: b changed (size and ETag differ).
	store.mu.Lock()
	d := store.objects[keyOf("b")]
	d.Body = []byte("edited by hand")
	store.objects[keyOf("b")] = d
	store.mu.Unlock()

	restarted := startWriter(t, time.Millisecond, store)
	restarted.w.Ledger().SetIdentity(object.Identity{UID: "ours"})
	seeded, err := restarted.w.Ledger().Seed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if seeded.Indexed != 2 || seeded.Own != 3 {
		t.Errorf("seeded %+v: want 3 own keys, 2 vouched for by the index", seeded)
	}
	before, _ := store.counts()
	for _, n := range []string{"a", "b", "c"} {
		restarted.src.set(ref(n), "body of "+n)
		restarted.w.Enqueue(ref(n))
	}
	eventually(t, 5*time.Second, "an empty queue", func() bool { return restarted.w.Pending() == 0 })
	if after, _ := store.counts(); after-before != 1 {
		t.Errorf("after a restart %d objects were written, want b alone (changed behind the service's back)", after-before)
	}
	if body, _ := store.body(keyOf("b")); body != "body of b" {
		t.Errorf("b holds %q", body)
	}
	// The pass's view of a bare listing: known only while size and ETag
	// match what the writer wrote.
	s := object.Stored{Key: keyOf("a"), ETag: object.ETag([]byte("body of a")), Size: int64(len("body of a"))}
	if restarted.w.Ledger().Known(s) != object.Digest([]byte("body of a")) {
		t.Error("Known does not vouch for an unchanged object")
	}
	s.ETag = object.ETag([]byte("other"))
	if restarted.w.Ledger().Known(s) != "" {
		t.Error("Known vouches for an object whose ETag changed")
	}
}

// TestQueueDepthEndsAtZero: offers and changes from many goroutines while
// the workers drain them leave cluster_backup_queue_depth at 0 once
// everything is written. A count exported after the writer's lock was
// released could land after a newer one and stay, showing a queue that
// never drains.
func TestQueueDepthEndsAtZero(t *testing.T) {
	store := newMemStore()
	h := startWriter(t, time.Millisecond, store)
	const producers, each = 8, 300
	for i := range producers * each {
		h.src.set(ref(fmt.Sprint("k", i)), "x")
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				r := ref(fmt.Sprint("k", p*each+i))
				if i%2 == 0 || !h.w.Offer(r) {
					h.w.Enqueue(r)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 30*time.Second, "every key written", func() bool { p, _ := store.counts(); return p == producers*each })
	eventually(t, 5*time.Second, "the queue empty", func() bool { return h.w.Pending() == 0 })
	if got := testutil.ToFloat64(h.m.QueueDepth); got != 0 {
		t.Errorf("queue depth %v with nothing pending", got)
	}
}

// TestLockedDeleteIsKept: a delete the store's Object Lock refuses is kept
// and not retried.
func TestLockedDeleteIsKept(t *testing.T) {
	store := newMemStore()
	h := startWriter(t, time.Millisecond, store)
	h.src.set(ref("a"), "x")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "write", func() bool { _, ok := h.store.body(keyOf("a")); return ok })
	store.setFail(fmt.Errorf("delete %s: %w: Object is WORM protected", keyOf("a"), ErrLocked))
	h.src.remove(ref("a"))
	out := h.w.Apply(context.Background(), []object.Ref{ref("a")}, 0)
	if out[0] != object.Kept {
		t.Errorf("a locked delete: outcome %v, want Kept", out[0])
	}
	eventually(t, 5*time.Second, "an empty queue", func() bool { return h.w.Pending() == 0 })
}

// TestTheQueueOwnsWriteRetries: a failing write is retried by the queue
// alone (a WithRetry around the store adds no calls), counted as an error
// only once RetryAttempts retries failed, and gives its worker back while
// it waits.
func TestTheQueueOwnsWriteRetries(t *testing.T) {
	retried := func(s Store) Store { return WithRetry(s, 3, time.Hour) }
	for _, tc := range []struct {
		failures, attempts int
		wantErrors         float64
	}{
		{failures: 2, attempts: 3, wantErrors: 0},
		{failures: 3, attempts: 3, wantErrors: 0},
		{failures: 5, attempts: 3, wantErrors: 2},
		{failures: 1, attempts: 0, wantErrors: 1},
	} {
		t.Run(fmt.Sprintf("%d failures, %d retries", tc.failures, tc.attempts), func(t *testing.T) {
			store := newMemStore()
			h := startWriterTuned(t, store, clock.RealClock{}, func(o *WriterOptions) {
				o.RetryAttempts, o.RetryDelay = tc.attempts, time.Millisecond
			}, retried)
			store.failNext(keyOf("a"), tc.failures)
			h.src.set(ref("a"), "v")
			h.w.Enqueue(ref("a"))
			eventually(t, 5*time.Second, "the write", func() bool { _, ok := store.body(keyOf("a")); return ok })
			if got := store.putAttempts(); got != tc.failures+1 {
				t.Errorf("%d calls for %d failures, want %d: one layer retries", got, tc.failures, tc.failures+1)
			}
			if got := testutil.ToFloat64(h.m.Errors.WithLabelValues(string(logging.OpObjectWrite))); got != tc.wantErrors {
				t.Errorf("errors counted %v, want %v", got, tc.wantErrors)
			}
		})
	}

	t.Run("a failing key gives its worker back", func(t *testing.T) {
		fc := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
		store := newMemStore()
		h := startWriterTuned(t, store, fc, func(o *WriterOptions) { o.Workers, o.RetryAttempts, o.RetryDelay = 1, 3, time.Hour }, retried)
		store.failNext(keyOf("a"), 1000)
		h.src.set(ref("a"), "v")
		h.w.Enqueue(ref("a"))
		eventually(t, 5*time.Second, "the failed call", func() bool { return store.putAttempts() == 1 })
		h.src.set(ref("b"), "v")
		h.w.Enqueue(ref("b"))
		// The clock stands still: b can be written only by a worker that
		// is not waiting out a's retry.
		eventually(t, 5*time.Second, "b written while a waits", func() bool { _, ok := store.body(keyOf("b")); return ok })
		if h.w.Pending() != 1 {
			t.Errorf("%d keys pending, want a", h.w.Pending())
		}
	})

	t.Run("Apply hears a failure once the retries are spent", func(t *testing.T) {
		store := newMemStore()
		h := startWriterTuned(t, store, clock.RealClock{}, func(o *WriterOptions) { o.RetryAttempts, o.RetryDelay = 2, time.Millisecond }, retried)
		h.src.set(ref("a"), "v")
		store.failNext(keyOf("a"), 2)
		if got := h.w.Apply(context.Background(), []object.Ref{ref("a")}, h.w.Ledger().Seq()); got[0] != object.Written {
			t.Errorf("Apply over two failures and two retries: %v, want Written", got[0])
		}
		h.src.set(ref("b"), "v")
		store.failNext(keyOf("b"), 1000)
		if got := h.w.Apply(context.Background(), []object.Ref{ref("b")}, h.w.Ledger().Seq()); got[0] != object.Failed {
			t.Errorf("Apply over a store that keeps failing: %v, want Failed", got[0])
		}
		if got := store.putAttempts(); got != 3 {
			t.Errorf("Apply answered after %d calls, want 3 (the call and its two retries)", got)
		}
	})
}

// TestCallTimeout: a store that never answers fails the call, and the key
// is retried.
func TestCallTimeout(t *testing.T) {
	store := newMemStore()
	hang := &hanging{Store: store, left: 1}
	h := startWriterTuned(t, store, clock.RealClock{}, func(o *WriterOptions) {
		o.CallTimeout, o.RetryDelay = 50*time.Millisecond, time.Millisecond
	}, func(Store) Store { return hang })
	h.src.set(ref("a"), "v")
	h.w.Enqueue(ref("a"))
	eventually(t, 5*time.Second, "the write after a call that hung", func() bool { _, ok := store.body(keyOf("a")); return ok })
}

// hanging blocks its first left Puts until their context ends.
type hanging struct {
	Store
	mu   sync.Mutex
	left int
}

func (s *hanging) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	s.mu.Lock()
	hang := s.left > 0
	s.left--
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.Put(ctx, key, body, meta)
}

// TestNoChangeIsLost changes many objects from several goroutines with a
// short window: every object's last state ends in the store.
func TestNoChangeIsLost(t *testing.T) {
	store := newMemStore()
	h := startWriterTuned(t, store, clock.RealClock{}, func(o *WriterOptions) { o.Debounce = 5 * time.Millisecond }, nil)
	const objects, changes, writers = 50, 4000, 8
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := g; i < changes; i += writers {
				r := ref(fmt.Sprintf("o%02d", i%objects))
				h.src.set(r, fmt.Sprintf("v%d", i))
				h.w.Enqueue(r)
				if i%97 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	// A pass forces writes meanwhile, as the snapshot pass does.
	stop := make(chan struct{})
	passes := make(chan struct{})
	go func() {
		defer close(passes)
		for {
			select {
			case <-stop:
				return
			default:
			}
			refs := make([]object.Ref, 0, objects)
			for i := range objects {
				refs = append(refs, ref(fmt.Sprintf("o%02d", i)))
			}
			h.w.Apply(context.Background(), refs, h.w.Ledger().Seq())
		}
	}()
	wg.Wait()
	close(stop)
	<-passes
	eventually(t, 10*time.Second, "an empty queue", func() bool { return h.w.Pending() == 0 })
	for i := range objects {
		r := ref(fmt.Sprintf("o%02d", i))
		h.src.mu.Lock()
		want := h.src.docs[r]
		h.src.mu.Unlock()
		eventually(t, 5*time.Second, "the last state of "+r.Name, func() bool { b, _ := store.body(keyOf(r.Name)); return b == want })
	}
}
