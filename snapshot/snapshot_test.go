package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

type cached struct {
	ref  object.Ref
	body string
	err  error
	drop bool // filtered out
}

type fakeSource struct {
	objects    []cached
	incomplete map[string]bool
	denied     []string // of incomplete
	// known are the segments discovery resolves (to the core group
	// unless told otherwise); unknown segments are never prunable.
	known map[string]string
}

func (f fakeSource) Each(visit func(object.Ref, string, bool, error)) {
	for _, o := range f.objects {
		visit(o.ref, object.Digest([]byte(o.body)), !o.drop && o.err == nil, o.err)
	}
}

func (f fakeSource) Incomplete() []string {
	var out []string
	for s := range f.incomplete {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (f fakeSource) Denied() []string { return f.denied }

func (f fakeSource) Resolve(seg string) (object.GroupResource, bool) {
	group, known := f.known[seg]
	if !known && f.known != nil {
		return object.GroupResource{}, false
	}
	resource, g, _ := strings.Cut(seg, ".")
	if group == "" {
		group = g
	}
	return object.GroupResource{Group: group, Resource: resource}, !f.incomplete[seg]
}

var testLayout = object.Layout{Prefix: "clusterbackup", Cluster: "c"}

type fakeStore struct{ stored []object.Stored }

func (f fakeStore) Walk(_ context.Context, _ string, visit func(object.Stored) error) error {
	for _, s := range f.stored {
		if err := visit(s); err != nil {
			return err
		}
	}
	return nil
}

// fakeWriter records what the pass asked for and answers as told.
type fakeWriter struct {
	mu        sync.Mutex
	applied   []object.Ref
	forgotten []string
	outcome   func(object.Ref) object.Outcome
}

func (f *fakeWriter) Seq() uint64 { return 0 }

// Known vouches for nothing: the fake store's listings carry metadata.
func (f *fakeWriter) Known(object.Stored) string { return "" }

func (f *fakeWriter) Forget(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, key)
}

func (f *fakeWriter) Apply(_ context.Context, refs []object.Ref, _ uint64) []object.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]object.Outcome, len(refs))
	for i, r := range refs {
		f.applied = append(f.applied, r)
		out[i] = f.outcome(r)
	}
	return out
}

func cm(ns, name string) object.Ref {
	return object.Ref{Resource: "configmaps", Namespace: ns, Name: name}
}

func stored(ref object.Ref, body string) object.Stored {
	return object.Stored{Key: testLayout.Key(ref), Meta: object.Meta{SHA256: object.Digest([]byte(body))}}
}

func TestPassWritesOnlyDifferences(t *testing.T) {
	widget := object.Ref{Group: "example.com", Resource: "widgets", Namespace: "b", Name: "w"}
	src := fakeSource{
		objects: []cached{
			{ref: cm("a", "same"), body: "same"},
			{ref: cm("a", "changed"), body: "new"},
			{ref: cm("a", "missing"), body: "x"},
			{ref: cm("a", "filtered"), body: "x", drop: true},
			{ref: cm("a", "big"), err: &encode.InvalidError{Reason: encode.ReasonTooLarge, Err: errors.New("big")}},
		},
		incomplete: map[string]bool{"widgets.example.com": true},
	}
	st := fakeStore{stored: []object.Stored{
		stored(cm("a", "same"), "same"),
		stored(cm("a", "changed"), "old"),
		stored(cm("a", "gone"), "x"),
		stored(cm("a", "filtered"), "x"),
		stored(cm("a", "big"), "old big"),
		stored(widget, "w"), // its type's cache is incomplete: kept
		{Key: "clusterbackup/c/not-in-layout.txt"},
	}}
	w := &fakeWriter{outcome: func(r object.Ref) object.Outcome {
		if r.Name == "gone" || r.Name == "filtered" {
			return object.Deleted
		}
		return object.Written
	}}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Layout: testLayout, BatchSize: 2, Settings: object.NewSettings(true, 1), Source: src, Store: st, Writer: w, Ledger: w, Log: zap.NewNop(), Metrics: m}
	res, err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "widgets.example.com") {
		t.Fatalf("a pass with an incomplete type must fail naming it, got %v", err)
	}
	var names []string
	for _, r := range w.applied {
		names = append(names, r.Name)
	}
	sort.Strings(names) // batches run concurrently
	if got := strings.Join(names, ","); got != "changed,filtered,gone,missing" {
		t.Errorf("applied %s", got)
	}
	if res.BackedUp != 2 || res.Deleted != 2 || res.Unchanged != 1 || res.Skipped != 1 || res.Errors != 0 || res.Namespaces != 1 || res.Kept != 1 {
		t.Errorf("result %+v", res)
	}
	if testutil.ToFloat64(m.LastSuccess) != 0 {
		t.Error("a pass that left a type out moved the last-success time")
	}
	if testutil.ToFloat64(m.Incomplete) != 1 {
		t.Error("incomplete gauge not set")
	}

	// The same type denied by RBAC: kept and reported, but the pass
	// succeeds.
	src.denied = []string{"widgets.example.com"}
	p.Source = src
	res, err = p.Run(context.Background())
	if err != nil {
		t.Fatalf("a pass whose only missing type is denied: %v", err)
	}
	if res.Kept != 1 || !strings.Contains(res.Summary(), "not permitted by RBAC (kept, not backed up): widgets.example.com") {
		t.Errorf("denied type: kept %d, summary %q", res.Kept, res.Summary())
	}
	if testutil.ToFloat64(m.LastSuccess) == 0 || testutil.ToFloat64(m.Incomplete) != 1 {
		t.Error("a pass with only a denied type missing: last success not moved, or the type not reported incomplete")
	}
}

func TestPlanPrunesOnlyCompleteOrExcludedTypes(t *testing.T) {
	deploy := object.Ref{Group: "apps", Resource: "deployments", Namespace: "a", Name: "d"}
	for _, tc := range []struct {
		name    string
		src     fakeSource
		stored  []object.Stored
		deletes []object.Ref
		kept    int
	}{
		{
			name:    "complete type: absent objects are deleted",
			src:     fakeSource{},
			stored:  []object.Stored{stored(cm("a", "gone"), "x")},
			deletes: []object.Ref{cm("a", "gone")},
		},
		{
			name:   "incomplete type: kept",
			src:    fakeSource{incomplete: map[string]bool{"configmaps": true}},
			stored: []object.Stored{stored(cm("a", "gone"), "x")},
			kept:   1,
		},
		{
			name:   "type discovery does not know (group failing, informer gone): kept",
			src:    fakeSource{known: map[string]string{}},
			stored: []object.Stored{stored(cm("a", "gone"), "x"), stored(deploy, "d")},
			kept:   2,
		},
		{
			name:    "a segment without suffix resolves to its real group",
			src:     fakeSource{known: map[string]string{"deployments": "apps"}},
			stored:  []object.Stored{stored(deploy, "d")},
			deletes: []object.Ref{deploy},
		},
		{
			name: "another cluster's objects are never touched",
			src:  fakeSource{},
			stored: []object.Stored{
				{Key: testLayout.Key(cm("a", "theirs")), Meta: object.Meta{ClusterUID: "theirs"}},
				{Key: testLayout.Key(cm("a", "ours")), Meta: object.Meta{ClusterUID: "ours"}},
			},
			deletes: []object.Ref{cm("a", "ours")},
		},
		{
			name:   "keys outside the layout are not counted or touched",
			src:    fakeSource{},
			stored: []object.Stored{{Key: "clusterbackup/c/identity.json"}, {Key: "clusterbackup/c/a/b/c/d.yaml"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have, err := ownKeys(context.Background(), fakeStore{stored: tc.stored}, testLayout.Root(), testLayout, object.Identity{UID: "ours"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			pl := plan(testLayout, have, tc.src, true)
			if fmt.Sprint(pl.deletes) != fmt.Sprint(tc.deletes) {
				t.Errorf("deletes %v, want %v", pl.deletes, tc.deletes)
			}
			kept := 0
			for _, c := range pl.counts {
				kept += c.Kept
			}
			if kept != tc.kept {
				t.Errorf("kept %d, want %d", kept, tc.kept)
			}
		})
	}
}

func TestHoldDeletes(t *testing.T) {
	for _, tc := range []struct {
		name             string
		deletes, objects int
		fraction         float64
		allow            bool
		standing         string
		held             bool
	}{
		{name: "nothing to delete", deletes: 0, objects: 0, fraction: 0.1},
		{name: "within the fraction", deletes: 10, objects: 100, fraction: 0.1},
		{name: "beyond the fraction", deletes: 11, objects: 100, fraction: 0.1, held: true},
		{name: "everything", deletes: 100, objects: 100, fraction: 0.1, held: true},
		{name: "allowed by the operator", deletes: 100, objects: 100, fraction: 0.1, allow: true},
		{name: "guard disabled", deletes: 100, objects: 100, fraction: 1},
		{name: "standing hold wins over allow", deletes: 1, objects: 100, fraction: 1, allow: true, standing: "foreign cluster", held: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := holdDeletes(tc.deletes, tc.objects, tc.fraction, tc.allow, tc.standing)
			if (got != "") != tc.held {
				t.Errorf("held %q, want held=%v", got, tc.held)
			}
		})
	}
}

func TestPruneGuardHoldsEveryDelete(t *testing.T) {
	var st fakeStore
	for i := range 10 {
		st.stored = append(st.stored, stored(cm("a", fmt.Sprint(i)), "x"))
	}
	w := &fakeWriter{outcome: func(object.Ref) object.Outcome { return object.Deleted }}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Layout: testLayout, Settings: object.NewSettings(true, 0.1), Source: fakeSource{}, Store: st, Writer: w, Ledger: w, Log: zap.NewNop(), Metrics: m}
	res, err := p.Run(context.Background())
	if err == nil || res.PruneHeld == "" || res.Kept != 10 || len(w.applied) != 0 {
		t.Fatalf("err %v, result %+v, applied %v", err, res, w.applied)
	}
	if testutil.ToFloat64(m.PruneGuard) != 1 || testutil.ToFloat64(m.Errors.WithLabelValues("prune_guard")) != 1 {
		t.Error("guard gauge or error not set")
	}
	p.AllowMassPrune = true
	if res, err = p.Run(context.Background()); err != nil || res.Deleted != 10 {
		t.Fatalf("allowed: err %v, result %+v", err, res)
	}
	if testutil.ToFloat64(m.PruneGuard) != 0 {
		t.Error("guard gauge not cleared")
	}
}

func TestPassWithErrorsKeepsLastSuccess(t *testing.T) {
	src := fakeSource{objects: []cached{{ref: cm("a", "x"), body: "x"}}}
	w := &fakeWriter{outcome: func(object.Ref) object.Outcome { return object.Failed }}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Layout: testLayout, Source: src, Store: fakeStore{}, Writer: w, Ledger: w, Log: zap.NewNop(), Metrics: m}
	res, err := p.Run(context.Background())
	if err == nil || res.Errors != 1 {
		t.Fatalf("want an error, got %v %+v", err, res)
	}
	if testutil.ToFloat64(m.LastSuccess) != 0 {
		t.Error("a failed pass moved the last-success time")
	}
	if testutil.CollectAndCount(m.Duration) != 1 {
		t.Error("duration not observed for a failed pass")
	}
	if testutil.ToFloat64(m.Errors.WithLabelValues("snapshot")) != 1 {
		t.Error("failed pass not counted")
	}
}

func TestInterleaveSpreadsFolders(t *testing.T) {
	var refs []object.Ref
	for _, ns := range []string{"b", "a"} {
		for _, name := range []string{"3", "1", "2"} {
			refs = append(refs, cm(ns, name))
		}
	}
	refs = append(refs, object.Ref{Resource: "secrets", Namespace: "a", Name: "s"})
	var got []string
	for _, r := range interleave(refs) {
		got = append(got, r.Namespace+"/"+r.Resource+"/"+r.Name)
	}
	want := "a/configmaps/1 a/secrets/s b/configmaps/1 a/configmaps/2 b/configmaps/2 a/configmaps/3 b/configmaps/3"
	if strings.Join(got, " ") != want {
		t.Errorf("order %s\nwant  %s", strings.Join(got, " "), want)
	}
}

// TestCannotStoreCountsAlike: an object that cannot be stored is counted
// the same whether the plan or the writer found it.
func TestCannotStoreCountsAlike(t *testing.T) {
	for _, tc := range []struct {
		name        string
		reason      string
		skipInvalid bool
		want        Counts
	}{
		{"too large, skipped", encode.ReasonTooLarge, true, Counts{Skipped: 1}},
		{"too large, an error", encode.ReasonTooLarge, false, Counts{Skipped: 1, Errors: 1}},
		{"invalid, skipped", encode.ReasonInvalid, true, Counts{Invalid: 1}},
		{"invalid, an error", encode.ReasonInvalid, false, Counts{Invalid: 1, Errors: 1}},
	} {
		var fromPlan Counts
		fromPlan.cannotStore(tc.reason, tc.skipInvalid)
		if fromPlan != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, fromPlan, tc.want)
		}
	}
}
