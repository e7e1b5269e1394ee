package journal

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink/sinktest"

	"github.com/prometheus/client_golang/prometheus"
)

var layout = object.Layout{Prefix: "clusterbackup", Cluster: "east"}

func TestEncodeDecode(t *testing.T) {
	at := time.Date(2026, 12, 7, 17, 31, 16, 123456789, time.UTC)
	in := Object{Through: at.Add(time.Second), Entries: []Entry{
		{Time: at, Op: Put, Key: "shop/configmaps/web.yaml", ResourceVersion: "42", Manager: "kubectl-edit"},
		{Time: at.Add(time.Millisecond), Op: Delete, Key: "_cluster/namespaces/old.yaml"},
		{Time: at, Op: Put, Key: "a/b/c.yaml", Manager: "with\ttab"},
	}}
	body := Encode(in)
	if !strings.HasPrefix(string(body), "cluster-backup journal 1\t2026-12-07T17:31:17.123456789Z\n") {
		t.Errorf("header of\n%s", body)
	}
	out, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	in.Entries[2].Manager = "with tab"
	if !out.Through.Equal(in.Through) || len(out.Entries) != 3 {
		t.Fatalf("decoded %+v", out)
	}
	for i := range in.Entries {
		if g, w := out.Entries[i], in.Entries[i]; !g.Time.Equal(w.Time) || g.Op != w.Op || g.Key != w.Key || g.ResourceVersion != w.ResourceVersion || g.Manager != w.Manager {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	for _, bad := range []string{"", "cluster-backup journal 1\n", "cluster-backup journal 2\t2026-12-07T00:00:00Z\n",
		"cluster-backup journal 1\t2026-12-07T00:00:00Z\n2026-12-07T00:00:00Z\tpatch\tk\t\t\n",
		"cluster-backup journal 1\t2026-12-07T00:00:00Z\nnot a time\tput\tk\t\t\n",
		"cluster-backup journal 1\t2026-12-07T00:00:00Z\n2026-12-07T00:00:00Z\tput\tk\n"} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("Decode(%q) = %v, want ErrFormat", bad, err)
		}
	}
}

func TestNamesSortInTimeOrder(t *testing.T) {
	base := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	var names []string
	for _, d := range []time.Duration{0, time.Nanosecond, 999 * time.Millisecond, time.Second, 10 * time.Hour, 24 * time.Hour * 400} {
		names = append(names, Name(layout, base.Add(d), "ffffffff"))
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("names not in time order: %q", names)
	}
	if got, ok := TakenAt(names[2]); !ok || !got.Equal(base.Add(999*time.Millisecond)) {
		t.Errorf("TakenAt(%s) = %v, %v", names[2], got, ok)
	}
	if !strings.HasPrefix(names[0], "clusterbackup/_journal/east/") {
		t.Errorf("name %s, want it under clusterbackup/_journal/east/", names[0])
	}
	// Since(t) sorts before the objects taken at t and after those before.
	since := Since(layout, base.Add(time.Second))
	if names[2] >= since || since >= names[3] {
		t.Errorf("Since = %s, want between %s and %s", since, names[2], names[3])
	}
}

func TestRecorderFlushesInOrderAndKeepsWhatFails(t *testing.T) {
	store := sinktest.New()
	signer := object.NewSigner([]byte("0123456789abcdef-journal"))
	r := NewRecorder(store, layout, signer, zap.NewNop(), metrics.New(prometheus.NewRegistry()))
	clock := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	r.now = func() time.Time { clock = clock.Add(time.Second); return clock }

	// A write in flight when the entries are taken holds the object's
	// through time back to its start.
	slow := r.Begin() // 10:00:01
	done := r.Begin()
	r.End(done, &Entry{Op: Put, Key: "shop/configmaps/a.yaml", ResourceVersion: "1", Manager: "helm"})
	failed := r.Begin()
	r.End(failed, nil) // a failed write records nothing
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.End(slow, &Entry{Op: Delete, Key: "shop/configmaps/b.yaml"})
	store.SetFail(errors.New("store down"))
	if err := r.Flush(context.Background()); err == nil || r.Pending() != 1 {
		t.Fatalf("a failed flush: %v, %d pending; want an error and the entry kept", err, r.Pending())
	}
	store.SetFail(nil)
	if err := r.Flush(context.Background()); err != nil || r.Pending() != 0 {
		t.Fatalf("flush after the store is back: %v, %d pending", err, r.Pending())
	}
	if err := r.Flush(context.Background()); err != nil || len(store.Current("")) != 2 {
		t.Fatalf("an empty flush wrote something: %d objects, %v", len(store.Current("")), err)
	}

	var got []Object
	err := Read(context.Background(), store, layout, "", signer, false, func(key string, o Object, err error) error {
		if err != nil {
			t.Errorf("%s: %v", key, err)
		}
		got = append(got, o)
		return nil
	})
	if err != nil || len(got) != 2 {
		t.Fatalf("read %d objects, %v", len(got), err)
	}
	if e := got[0].Entries; len(e) != 1 || e[0].Key != "shop/configmaps/a.yaml" || e[0].Manager != "helm" || e[0].ResourceVersion != "1" {
		t.Errorf("first object %+v", got[0])
	}
	if want := time.Date(2026, 12, 7, 10, 0, 1, 0, time.UTC); !got[0].Through.Equal(want) {
		t.Errorf("first object through %v, want %v, the start of the write still in flight", got[0].Through, want)
	}
	if e := got[1].Entries; len(e) != 1 || e[0].Op != Delete || !got[1].Through.After(e[0].Time) {
		t.Errorf("second object %+v", got[1])
	}

	// Reading from a position returns only what follows it.
	var keys []string
	first := ""
	_ = Read(context.Background(), store, layout, "", signer, false, func(key string, _ Object, _ error) error {
		if first == "" {
			first = key
		}
		return nil
	})
	_ = Read(context.Background(), store, layout, first, signer, false, func(key string, _ Object, _ error) error {
		keys = append(keys, key)
		return nil
	})
	if len(keys) != 1 || keys[0] == first {
		t.Errorf("read after %s: %q", first, keys)
	}

	// A forged object, an unsigned one and one under another key are
	// refused by name.
	forgedKey := Name(layout, clock.Add(time.Hour), "attacker")
	body := Encode(Object{Through: clock, Entries: []Entry{{Time: clock, Op: Delete, Key: "shop/configmaps/a.yaml"}}})
	store.PutAt(forgedKey, body, object.Meta{SHA256: object.Digest(body), Integrity: object.NewSigner([]byte("another key of 16 bytes")).SignBytes(forgedKey, body)}, clock)
	unsignedKey := Name(layout, clock.Add(2*time.Hour), "attacker")
	store.PutAt(unsignedKey, body, object.Meta{SHA256: object.Digest(body)}, clock)
	verdicts := map[string]error{}
	_ = Read(context.Background(), store, layout, first, signer, false, func(key string, o Object, err error) error {
		verdicts[key] = err
		if err != nil && len(o.Entries) != 0 {
			t.Errorf("%s: entries of a refused object", key)
		}
		return nil
	})
	if !errors.Is(verdicts[forgedKey], object.ErrForged) || !errors.Is(verdicts[unsignedKey], object.ErrUnsigned) {
		t.Errorf("verdicts %v", verdicts)
	}
	accepted := 0
	_ = Read(context.Background(), store, layout, first, signer, true, func(key string, o Object, err error) error {
		if key == unsignedKey && err == nil && len(o.Entries) == 1 {
			accepted++
		}
		return nil
	})
	if accepted != 1 {
		t.Error("an unsigned object is not read when unsigned ones are accepted")
	}
}

func TestRecorderBoundsWhatItHolds(t *testing.T) {
	store := sinktest.New()
	store.SetFail(errors.New("store down"))
	r := NewRecorder(store, layout, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry()))
	for i := 0; i < MaxBuffered+10; i++ {
		r.End(r.Begin(), &Entry{Op: Put, Key: "k"})
	}
	if r.Pending() != MaxBuffered {
		t.Errorf("%d pending, want at most %d", r.Pending(), MaxBuffered)
	}
	store.SetFail(nil)
	if err := r.Flush(context.Background()); err != nil || len(store.Current("")) != 1 {
		t.Errorf("flush: %v, %d objects", err, len(store.Current("")))
	}
	var nilRecorder *Recorder
	nilRecorder.End(nilRecorder.Begin(), &Entry{})
	if nilRecorder.Flush(context.Background()) != nil || nilRecorder.Pending() != 0 {
		t.Error("a nil Recorder must record nothing")
	}
}
