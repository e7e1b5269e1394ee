package snapshot

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
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
}

func (f fakeSource) Each(visit func(object.Ref, string, bool, error)) {
	for _, o := range f.objects {
		visit(o.ref, object.Digest([]byte(o.body)), !o.drop && o.err == nil, o.err)
	}
}

func (f fakeSource) Incomplete() map[string]bool { return f.incomplete }

type fakeStore struct{ stored []object.Stored }

func (f fakeStore) List(context.Context, string) ([]object.Stored, error) { return f.stored, nil }

// fakeWriter records what the pass asked for and answers as told.
type fakeWriter struct {
	mu      sync.Mutex
	applied []object.Ref
	outcome func(object.Ref) sink.Outcome
}

func (f *fakeWriter) Seq() uint64 { return 0 }

func (f *fakeWriter) Apply(_ context.Context, refs []object.Ref, _ uint64) []sink.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]sink.Outcome, len(refs))
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
	return object.Stored{Key: ref.Key("clusterbackup", "c"), Meta: object.Meta{SHA256: object.Digest([]byte(body))}}
}

func TestPassWritesOnlyDifferences(t *testing.T) {
	widget := object.Ref{Group: "example.com", Resource: "widgets", Namespace: "b", Name: "w"}
	src := fakeSource{
		objects: []cached{
			{ref: cm("a", "same"), body: "same"},
			{ref: cm("a", "changed"), body: "new"},
			{ref: cm("a", "missing"), body: "x"},
			{ref: cm("a", "filtered"), body: "x", drop: true},
			{ref: cm("a", "big"), err: &filter.InvalidError{Reason: filter.ReasonTooLarge, Err: errors.New("big")}},
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
	w := &fakeWriter{outcome: func(r object.Ref) sink.Outcome {
		if r.Name == "gone" || r.Name == "filtered" {
			return sink.Deleted
		}
		return sink.Written
	}}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Prefix: "clusterbackup", Cluster: "c", BatchSize: 2, SkipInvalid: true, Source: src, Store: st, Writer: w, Log: zap.NewNop(), Metrics: m}
	res, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range w.applied {
		names = append(names, r.Name)
	}
	sort.Strings(names) // batches run concurrently
	if got := strings.Join(names, ","); got != "changed,filtered,gone,missing" {
		t.Errorf("applied %s", got)
	}
	if res.BackedUp != 2 || res.Deleted != 2 || res.Unchanged != 1 || res.Skipped != 1 || res.Errors != 0 || res.Namespaces != 1 {
		t.Errorf("result %+v", res)
	}
	if testutil.ToFloat64(m.LastSuccess) == 0 || testutil.ToFloat64(m.Namespaces) != 1 {
		t.Error("success gauges not set")
	}
}

func TestPassWithErrorsKeepsLastSuccess(t *testing.T) {
	src := fakeSource{objects: []cached{{ref: cm("a", "x"), body: "x"}}}
	w := &fakeWriter{outcome: func(object.Ref) sink.Outcome { return sink.Failed }}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Prefix: "clusterbackup", Cluster: "c", Source: src, Store: fakeStore{}, Writer: w, Log: zap.NewNop(), Metrics: m}
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
