package restore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// TestViewOnMinIO resolves points in time against a real bucket: a key
// with more versions than one page of a version listing holds, a key whose
// newest version is a delete marker, a time before the first version and
// times between versions.
func TestViewOnMinIO(t *testing.T) {
	testenv.Require(t, "minio")
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	srv, err := testenv.StartMinIO(startCtx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	store, err := sink.NewMinIO(ctx, sink.MinIOOptions{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: "pit", Connections: 16}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	busy := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "busy"})
	gone := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "gone"})
	put := func(key, body string) time.Time {
		t.Helper()
		if err := store.Put(ctx, key, []byte(body), object.Meta{SHA256: object.Digest([]byte(body))}); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	// The store's times have millisecond resolution: tick waits until the
	// clock has moved on by two.
	tick := func() {
		start := time.Now().Truncate(time.Millisecond)
		for time.Now().Truncate(time.Millisecond).Sub(start) < 2*time.Millisecond {
			runtime.Gosched()
		}
	}
	beforeAll := time.Now()
	tick()
	// Documents carry their object's creation time, as the service's do:
	// a key whose versions all come after a time is absent then only if
	// its object was created after it.
	docAt := func(created string, i int) string {
		return fmt.Sprintf("metadata:\n  creationTimestamp: %q\nv: %d\n", created, i)
	}
	createdAt := func() string { return time.Now().UTC().Add(time.Second).Format(time.RFC3339) }
	busyCreated := createdAt()
	doc := func(i int) string { return docAt(busyCreated, i) }
	const versions = 1205 // more than one 1,000-entry page
	var afterFirst, afterMiddle time.Time
	for i := range versions {
		put(busy, doc(i))
		switch i {
		case 0:
			tick()
			afterFirst = time.Now()
			tick()
		case versions / 2:
			tick()
			afterMiddle = time.Now()
			tick()
		}
	}
	goneDoc := docAt(createdAt(), 0)
	put(gone, goneDoc)
	tick()
	beforeDelete := time.Now()
	tick()
	if err := store.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		at   time.Time
		want map[string]string // key -> body in force
	}{
		{"before the first version", beforeAll, map[string]string{}},
		{"after the first version", afterFirst, map[string]string{busy: doc(0)}},
		{"between versions, across list pages", afterMiddle, map[string]string{busy: doc(versions / 2)}},
		{"before the delete", beforeDelete, map[string]string{busy: doc(versions - 1), gone: goneDoc}},
		{"a delete marker is newest", time.Now(), map[string]string{busy: doc(versions - 1)}},
	} {
		items, err := View(ctx, store, layout, []string{"a"}, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, f := range Fetch(ctx, store, items, 4) {
			if f.Err != nil {
				t.Fatalf("%s: %v", tc.name, f.Err)
			}
			got[f.Version.Key] = string(f.Body)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
