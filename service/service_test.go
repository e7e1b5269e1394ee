package service

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/snapshot"
)

// gauge is a store-up gauge for sink.WithHealth.
type gauge struct{ v atomic.Value }

func (g *gauge) Set(v float64) { g.v.Store(v) }

// failing is a store whose calls fail while down is set.
type failing struct {
	sink.Store
	down atomic.Bool
}

func (f *failing) Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error {
	if f.down.Load() {
		return errors.New("connection refused")
	}
	return f.Store.Walk(ctx, prefix, visit)
}

func TestReadiness(t *testing.T) {
	dir, err := sink.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &failing{Store: dir}
	var st status
	ready := st.ready()
	if ready() == nil {
		t.Error("ready before the store was reached")
	}
	health := sink.WithHealth(store, &gauge{})
	st.health.Store(health)
	if err := ready(); err != nil {
		t.Errorf("a standby that reached the store: %v", err)
	}
	st.leading.Store(true)
	if ready() == nil {
		t.Error("a leader is ready before its caches synced")
	}
	st.synced.Store(true)
	if err := ready(); err != nil {
		t.Errorf("a synced leader: %v", err)
	}
	store.down.Store(true)
	_ = health.Walk(context.Background(), "x/", func(object.Stored) error { return nil })
	if err := ready(); err == nil || !strings.Contains(err.Error(), "store") {
		t.Errorf("a leader whose store failed its last call: %v", err)
	}
}

func TestLiveness(t *testing.T) {
	var st status
	live := st.live(time.Minute)
	if err := live(); err != nil {
		t.Errorf("a standby: %v", err)
	}
	st.leading.Store(true)
	st.leadingSince.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	if live() == nil {
		t.Error("a leader without a pass beyond the bound is live")
	}
	st.held.Store(true)
	if err := live(); err != nil {
		t.Errorf("a leader held off another cluster's prefix must stay live (a restart does not help): %v", err)
	}
	st.held.Store(false)
	st.passed.Store(true)
	if err := live(); err != nil {
		t.Errorf("a leader that passed: %v", err)
	}
}

func TestPackDue(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	hour := time.Hour
	for _, tc := range []struct {
		name         string
		stored       bool
		seq, packSeq uint64
		at           time.Time
		want         bool
	}{
		{name: "none stored", stored: false, seq: 0, packSeq: 0, want: true},
		{name: "nothing written since", stored: true, seq: 7, packSeq: 7, at: now.Add(-2 * hour), want: false},
		{name: "written since, pack young", stored: true, seq: 8, packSeq: 7, at: now.Add(-time.Minute), want: false},
		{name: "written since, pack old", stored: true, seq: 8, packSeq: 7, at: now.Add(-hour), want: true},
		{name: "found at start, written since", stored: true, seq: 3, packSeq: 0, want: true},
		{name: "found at start, nothing written", stored: true, seq: 0, packSeq: 0, want: false},
	} {
		if got := packDue(tc.stored, tc.seq, tc.packSeq, tc.at, now, hour); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// claimHarness is a service over a directory store and a fake API server
// whose kube-system namespace has uid (none when uid is "").
func claimHarness(t *testing.T, uid string) (*Service, *pipeline, *sink.Dir) {
	t.Helper()
	dir, err := sink.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset()
	if uid != "" {
		cs = fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metav1.NamespaceSystem, UID: types.UID(uid)}})
	}
	cfg := config.Config{ClusterName: "prod", BackupPrefix: "clusterbackup"}
	s := &Service{cfg: cfg, log: zap.NewNop(), store: dir, clients: cs}
	m := metrics.New(prometheus.NewRegistry())
	holds := &object.Holds{}
	writer := sink.NewWriter(dir, sink.WriterOptions{Layout: s.layout(), Holds: holds}, zap.NewNop(), m, clock.RealClock{})
	p := &pipeline{writer: writer, ledger: writer.Ledger(), store: dir, holds: holds, metrics: m, pass: &snapshot.Pass{}}
	return s, p, dir
}

func marker(t *testing.T, dir *sink.Dir, layout object.Layout) (object.Identity, object.Meta, bool) {
	t.Helper()
	body, meta, err := dir.Get(context.Background(), layout.IdentityKey(), "")
	if errors.Is(err, sink.ErrNotFound) {
		return object.Identity{}, meta, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return object.ParseIdentity(body), meta, true
}

func writeMarker(t *testing.T, dir *sink.Dir, layout object.Layout, id object.Identity) {
	t.Helper()
	body := id.Marshal()
	if err := dir.Put(context.Background(), layout.IdentityKey(), body, object.Meta{UID: id.UID, ClusterUID: id.UID, SHA256: object.Digest(body)}); err != nil {
		t.Fatal(err)
	}
}

func TestClaimPrefix(t *testing.T) {
	ctx := context.Background()
	t.Run("an empty prefix is claimed", func(t *testing.T) {
		s, p, dir := claimHarness(t, "uid-a")
		if err := s.claimPrefix(ctx, p); err != nil {
			t.Fatal(err)
		}
		if id, meta, ok := marker(t, dir, s.layout()); !ok || id.UID != "uid-a" || meta.ClusterUID != "uid-a" {
			t.Errorf("marker %+v %+v (present %v), want one naming uid-a", id, meta, ok)
		}
		if p.ledger.ClusterUID() != "uid-a" || p.pass.Identity.UID != "uid-a" {
			t.Errorf("writer stamps %q, pass judges by %q", p.ledger.ClusterUID(), p.pass.Identity.UID)
		}
	})
	t.Run("our marker keeps the clusters we adopted", func(t *testing.T) {
		s, p, dir := claimHarness(t, "uid-a")
		writeMarker(t, dir, s.layout(), object.Identity{Cluster: "prod", UID: "uid-a", Adopted: []string{"uid-old"}})
		if err := s.claimPrefix(ctx, p); err != nil {
			t.Fatal(err)
		}
		if !p.pass.Identity.Owns("uid-old") {
			t.Error("the keys of the adopted cluster are not ours")
		}
	})
	t.Run("another cluster's marker stops a one-shot pass and writes nothing", func(t *testing.T) {
		s, p, dir := claimHarness(t, "uid-b")
		writeMarker(t, dir, s.layout(), object.Identity{Cluster: "prod", UID: "uid-a"})
		err := s.claimPrefix(ctx, p)
		if err == nil || !strings.Contains(err.Error(), "uid-a") {
			t.Errorf("claim over another cluster's marker: %v", err)
		}
		if id, _, _ := marker(t, dir, s.layout()); id.UID != "uid-a" {
			t.Errorf("the marker now names %q", id.UID)
		}
		if got := testutil.ToFloat64(p.metrics.PrefixHeld); got != 1 {
			t.Errorf("cluster_backup_prefix_held = %v", got)
		}
	})
	t.Run("the always-on service waits until the marker names it", func(t *testing.T) {
		s, p, dir := claimHarness(t, "uid-b")
		s.held = &atomic.Bool{}
		writeMarker(t, dir, s.layout(), object.Identity{Cluster: "prod", UID: "uid-a"})
		defer func(d time.Duration) { prefixPoll = d }(prefixPoll)
		prefixPoll = 10 * time.Millisecond
		done := make(chan error, 1)
		go func() { done <- s.claimPrefix(ctx, p) }()
		deadline := time.Now().Add(5 * time.Second)
		for !s.held.Load() {
			if time.Now().After(deadline) {
				t.Fatal("never held")
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case err := <-done:
			t.Fatalf("claim returned while another cluster owns the prefix: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		// cluster-backup adopt on the new cluster:
		writeMarker(t, dir, s.layout(), object.Identity{Cluster: "prod", UID: "uid-b", Adopted: []string{"uid-a"}})
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("still held after adopt")
		}
		if s.held.Load() || testutil.ToFloat64(p.metrics.PrefixHeld) != 0 || !p.pass.Identity.Owns("uid-a") {
			t.Errorf("after adopt: held %v, prefix_held %v, owns the old keys %v", s.held.Load(), testutil.ToFloat64(p.metrics.PrefixHeld), p.pass.Identity.Owns("uid-a"))
		}
	})
	t.Run("an unreadable identity holds every delete back", func(t *testing.T) {
		s, p, dir := claimHarness(t, "")
		if err := s.claimPrefix(ctx, p); err != nil {
			t.Fatal(err)
		}
		if p.holds.Reason() == "" {
			t.Error("deletes are not held back without the cluster's identity")
		}
		if _, _, ok := marker(t, dir, s.layout()); ok {
			t.Error("a marker was written without an identity")
		}
	})
}

// fakeCaches are the pass triggers of the caches, as a test sets them.
type fakeCaches struct {
	needs  atomic.Bool
	listed chan struct{}
	rules  chan filter.Rules
}

func (f *fakeCaches) NeedsPass() bool         { return f.needs.Load() }
func (f *fakeCaches) Listed() <-chan struct{} { return f.listed }
func (f *fakeCaches) SetRules(_ context.Context, r filter.Rules) error {
	f.rules <- r
	return nil
}

func TestPassScheduling(t *testing.T) {
	defer func(r, o time.Duration) { passRetryDelay, overflowCheck = r, o }(passRetryDelay, overflowCheck)
	passRetryDelay, overflowCheck = 20*time.Millisecond, 10*time.Millisecond
	s := &Service{log: zap.NewNop()}
	type wake struct {
		name   string
		setup  func(f *fakeCaches, tick chan time.Time, reloads chan config.ConfigMap, overflow *atomic.Bool, cancel func())
		want   bool
		reload bool
	}
	for _, tc := range []wake{
		{name: "the interval", want: true, setup: func(_ *fakeCaches, tick chan time.Time, _ chan config.ConfigMap, _ *atomic.Bool, _ func()) {
			tick <- time.Now()
		}},
		{name: "a list no pass has seen", want: true, setup: func(f *fakeCaches, _ chan time.Time, _ chan config.ConfigMap, _ *atomic.Bool, _ func()) {
			f.listed <- struct{}{} // nothing new: keeps waiting
			f.needs.Store(true)
			f.listed <- struct{}{}
		}},
		{name: "a new ConfigMap", want: true, reload: true, setup: func(_ *fakeCaches, _ chan time.Time, reloads chan config.ConfigMap, _ *atomic.Bool, _ func()) {
			reloads <- config.ConfigMap{Rules: filter.Rules{SkipInvalidResources: false}, MaxPruneFraction: 0.5}
		}},
		{name: "changes dropped by a full queue", want: true, setup: func(_ *fakeCaches, _ chan time.Time, _ chan config.ConfigMap, overflow *atomic.Bool, _ func()) {
			overflow.Store(true)
		}},
		{name: "shutdown", want: false, setup: func(_ *fakeCaches, _ chan time.Time, _ chan config.ConfigMap, _ *atomic.Bool, cancel func()) {
			cancel()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &fakeCaches{listed: make(chan struct{}), rules: make(chan filter.Rules, 1)}
			tick, reloads := make(chan time.Time), make(chan config.ConfigMap)
			var overflow atomic.Bool
			settings := object.NewSettings(true, 0.1)
			done := make(chan bool, 1)
			go func() {
				done <- s.awaitPass(ctx, f, func() bool { return overflow.Swap(false) }, settings, tick, reloads)
			}()
			tc.setup(f, tick, reloads, &overflow, cancel)
			select {
			case got := <-done:
				if got != tc.want {
					t.Errorf("awaitPass = %v, want %v", got, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no pass became due")
			}
			if tc.reload {
				select {
				case <-f.rules:
				default:
					t.Error("the new rules were not applied before the pass")
				}
				if settings.SkipInvalid() || settings.MaxPruneFraction() != 0.5 {
					t.Errorf("settings after the reload: skip %v, max-prune-fraction %v", settings.SkipInvalid(), settings.MaxPruneFraction())
				}
			}
		})
	}

	t.Run("a pass that could not list the store is tried again soon", func(t *testing.T) {
		f := &fakeCaches{listed: make(chan struct{}), rules: make(chan filter.Rules, 1)}
		f.needs.Store(true)
		start := time.Now()
		if !s.awaitPass(context.Background(), f, func() bool { return false }, object.NewSettings(true, 0.1), nil, nil) {
			t.Fatal("no retry")
		}
		if waited := time.Since(start); waited < passRetryDelay {
			t.Errorf("retried after %v, before passRetryDelay %v", waited, passRetryDelay)
		}
	})

	t.Run("nothing due: it waits", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		f := &fakeCaches{listed: make(chan struct{}), rules: make(chan filter.Rules, 1)}
		if s.awaitPass(ctx, f, func() bool { return false }, object.NewSettings(true, 0.1), nil, nil) {
			t.Error("a pass became due with nothing to do")
		}
	})
}
