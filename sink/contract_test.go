package sink

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/cluster-backup/cluster-backup/object"
)

// TestStoreContract holds every Store to the same promises: Put is
// idempotent, List returns exactly what is under a prefix with its
// metadata, Delete of a missing key is not an error, and the keys the
// layout can produce (dotted names, long names, the identity marker) are
// stored and listed back.
func TestStoreContract(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"memory": func(*testing.T) Store { return newMemStore() },
		"directory": func(t *testing.T) Store {
			d, err := NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		"minio": func(t *testing.T) Store {
			srv := startMinIO(t)
			return openBucket(t, srv.Endpoint, srv.AccessKey, srv.SecretKey)
		},
		// Its listings carry no user metadata: Get does.
		"seaweedfs": func(t *testing.T) Store {
			srv := startSeaweedFS(t)
			return openBucket(t, srv.Endpoint, srv.AccessKey, srv.SecretKey)
		},
	}
	names := make([]string, 0, len(stores))
	for n := range stores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			s := stores[name](t)
			ctx := context.Background()
			prefix := object.Layout{Prefix: "clusterbackup", Cluster: "east"}.Root()
			keys := []string{
				prefix + "default/configmaps/a.yaml",
				prefix + "_cluster/clusterroles.rbac.authorization.k8s.io/.dotted.yaml",
				prefix + "default/configmaps/" + strings.Repeat("n", 250) + ".yaml",
				object.Layout{Prefix: "clusterbackup", Cluster: "east"}.IdentityKey(),
			}
			want := map[string]object.Meta{}
			bodies := map[string][]byte{}
			for i, key := range keys {
				body := []byte("kind: Thing\nn: " + strings.Repeat("x", i) + "\n")
				bodies[key] = body
				meta := object.Meta{ResourceVersion: "1", UID: "u", APIVersion: "v1", SHA256: object.Digest(body), ClusterUID: "c"}
				for range 2 { // idempotent
					if err := s.Put(ctx, key, body, meta); err != nil {
						t.Fatalf("put %s: %v", key[:min(len(key), 60)], err)
					}
				}
				want[key] = meta
			}
			if err := s.Put(ctx, "clusterbackup/west/default/configmaps/a.yaml", []byte("x"), object.Meta{SHA256: object.Digest([]byte("x"))}); err != nil {
				t.Fatal(err)
			}
			list, err := List(ctx, s, prefix)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]object.Stored{}
			for _, st := range list {
				got[st.Key] = st
			}
			if len(got) != len(want) {
				t.Errorf("listed %d keys, want %d", len(got), len(want))
			}
			for k, m := range want {
				st := got[k]
				if st.Meta != (object.Meta{}) && st.Meta != m {
					t.Errorf("%.60s: listed %+v, want %+v", k, st.Meta, m)
				}
				// A listing without metadata: the object carries it.
				if _, gm, err := s.Get(ctx, k, ""); err != nil || gm != m {
					t.Errorf("%.60s: read back %+v %v, want %+v", k, gm, err, m)
				}
				// What the change index relies on (index.go).
				if st.ETag != "" && (st.ETag != object.ETag(bodies[k]) || st.Size != int64(len(bodies[k]))) {
					t.Errorf("%.60s: listed ETag %s size %d, want %s %d", k, st.ETag, st.Size, object.ETag(bodies[k]), len(bodies[k]))
				}
			}
			// Listing keys in order from a position, where the store can.
			if w, ok := s.(interface {
				WalkAfter(ctx context.Context, prefix, after string, visit func(object.Stored) error) error
			}); ok {
				walked := func(prefix, after string) []string {
					var out []string
					if err := w.WalkAfter(ctx, prefix, after, func(st object.Stored) error { out = append(out, st.Key); return nil }); err != nil {
						t.Fatal(err)
					}
					return out
				}
				sorted := slices.Sorted(maps.Keys(want))
				if got := walked(prefix, sorted[0]); !slices.Equal(got, sorted[1:]) {
					t.Errorf("WalkAfter(%s, the first key): %.80q, want %.80q", prefix, got, sorted[1:])
				}
				if got := walked(prefix+"default/configmaps/", ""); len(got) != 2 || !strings.HasPrefix(got[0], prefix+"default/configmaps/") {
					t.Errorf("WalkAfter of one folder: %.80q", got)
				}
				if got := walked(prefix+"nothing-here/", ""); len(got) != 0 {
					t.Errorf("WalkAfter of an empty folder: %q", got)
				}
			}
			for _, key := range keys {
				for range 2 { // deleting a missing key is not an error
					if err := s.Delete(ctx, key); err != nil {
						t.Fatalf("delete: %v", err)
					}
				}
			}
			if list, err := List(ctx, s, prefix); err != nil || len(list) != 0 {
				t.Errorf("after deletes: %d keys, %v", len(list), err)
			}
			if list, _ := List(ctx, s, "clusterbackup/west/"); len(list) != 1 {
				t.Errorf("another prefix was touched: %v", list)
			}
		})
	}
}

// openBucket opens (creating) the bucket "contract" of an S3 store.
func openBucket(t *testing.T, endpoint, accessKey, secretKey string) *MinIO {
	t.Helper()
	m, err := NewMinIO(context.Background(), MinIOOptions{Endpoint: endpoint, AccessKey: accessKey, SecretKey: secretKey, Bucket: "contract"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// flaky fails its first n calls with err.
type flaky struct {
	Store
	n     int32
	calls atomic.Int32
	err   error
	// onFail, when set, runs after each failed call.
	onFail func()
}

func (f *flaky) Put(ctx context.Context, key string, body []byte, meta object.Meta) error {
	if f.calls.Add(1) <= f.n {
		if f.onFail != nil {
			f.onFail()
		}
		return f.err
	}
	return f.Store.Put(ctx, key, body, meta)
}

type gauge struct{ v atomic.Value }

func (g *gauge) Set(v float64) { g.v.Store(v) }

func TestRetry(t *testing.T) {
	transient := errors.New("connection reset")
	for _, tc := range []struct {
		name      string
		failFirst int32
		err       error
		attempts  int
		wantCalls int32
		wantErr   bool
	}{
		{name: "success at once", failFirst: 0, err: transient, attempts: 3, wantCalls: 1},
		{name: "recovers within the attempts", failFirst: 2, err: transient, attempts: 3, wantCalls: 3},
		{name: "gives up after the attempts", failFirst: 10, err: transient, attempts: 3, wantCalls: 4, wantErr: true},
		{name: "permanent errors are not retried", failFirst: 10, err: ErrPermanent, attempts: 3, wantCalls: 1, wantErr: true},
		{name: "unstorable keys are not retried", failFirst: 10, err: ErrUnstorable, attempts: 3, wantCalls: 1, wantErr: true},
		{name: "no retries", failFirst: 10, err: transient, attempts: 0, wantCalls: 1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{Store: newMemStore(), n: tc.failFirst, err: tc.err}
			s := WithRetry(f, tc.attempts, time.Millisecond)
			err := s.Put(context.Background(), "k", []byte("b"), object.Meta{})
			if (err != nil) != tc.wantErr || f.calls.Load() != tc.wantCalls {
				t.Errorf("err %v after %d calls; want error %v after %d", err, f.calls.Load(), tc.wantErr, tc.wantCalls)
			}
		})
	}
	t.Run("a cancelled context stops the retries", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		// Cancelled while the first retry waits its hour.
		f := &flaky{Store: newMemStore(), n: 100, err: transient, onFail: cancel}
		s := WithRetry(f, 100, time.Hour)
		if err := s.Put(ctx, "k", nil, object.Meta{}); err == nil || f.calls.Load() != 1 {
			t.Errorf("err %v after %d calls", err, f.calls.Load())
		}
	})
}

func TestHealth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		healthy bool
	}{
		{name: "success", healthy: true},
		{name: "transient failure", err: errors.New("connection refused"), healthy: false},
		{name: "permanent failure", err: ErrPermanent, healthy: false},
		{name: "a key the store can never hold says nothing of its health", err: ErrUnstorable, healthy: true},
		{name: "a cancelled call says nothing either", err: context.Canceled, healthy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &gauge{}
			h := WithHealth(&flaky{Store: newMemStore(), n: 1, err: tc.err}, up)
			_ = h.Put(context.Background(), "k", nil, object.Meta{})
			if h.Healthy() != tc.healthy {
				t.Errorf("healthy %v, want %v", h.Healthy(), tc.healthy)
			}
			if want := map[bool]float64{true: 1, false: 0}[tc.healthy]; !errors.Is(tc.err, context.Canceled) && up.v.Load() != want {
				t.Errorf("gauge %v, want %v", up.v.Load(), want)
			}
		})
	}
	t.Run("the next success heals", func(t *testing.T) {
		up := &gauge{}
		h := WithHealth(&flaky{Store: newMemStore(), n: 1, err: errors.New("down")}, up)
		_ = h.Put(context.Background(), "k", nil, object.Meta{})
		_ = h.Put(context.Background(), "k", nil, object.Meta{})
		if !h.Healthy() || up.v.Load() != 1.0 {
			t.Error("a success after a failure did not heal")
		}
	})
}

func TestRateLimit(t *testing.T) {
	if s := newMemStore(); WithRateLimit(s, nil) != Store(s) {
		t.Error("a nil limiter must return the store unchanged")
	}
	// 20 writes a second with a burst of 1: the 11th write waits ~0.5 s.
	s := WithRateLimit(newMemStore(), rate.NewLimiter(20, 1))
	start := time.Now()
	for range 11 {
		if err := s.Put(context.Background(), "k", nil, object.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Errorf("11 writes at 20/s took %s", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Delete(ctx, "k"); err == nil {
		t.Error("a cancelled wait still deleted")
	}
}

// reader is the read side the browsing and restore commands use.
type reader interface {
	Store
	Versions(ctx context.Context, prefix string) ([]object.Version, error)
	Get(ctx context.Context, key, id string) ([]byte, object.Meta, error)
}

// TestReadContract holds the directory and MinIO stores to the read side:
// Get returns the bytes and the metadata written with them, a missing key
// is ErrNotFound, and Versions lists each key's versions newest first (a
// bucket keeps every version and a delete marker; a directory keeps one).
func TestReadContract(t *testing.T) {
	for _, tc := range []struct {
		name      string
		open      func(t *testing.T) reader
		versioned bool
	}{
		{"directory", func(t *testing.T) reader {
			d, err := NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		}, false},
		{"minio", func(t *testing.T) reader {
			srv := startMinIO(t)
			opts := MinIOOptions{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: "read", ReadOnly: true}
			if _, err := NewMinIO(context.Background(), opts, zap.NewNop()); !errors.Is(err, ErrPermanent) {
				t.Fatalf("a read-only open of a missing bucket: %v, want ErrPermanent", err)
			}
			opts.ReadOnly = false
			m, err := NewMinIO(context.Background(), opts, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			return m
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			ctx := context.Background()
			key := "clusterbackup/east/default/configmaps/a.yaml"
			bodies := []string{"v: 1\n", "v: 2\n"}
			for i, b := range bodies {
				meta := object.Meta{ResourceVersion: string(rune('1' + i)), SHA256: object.Digest([]byte(b))}
				if err := s.Put(ctx, key, []byte(b), meta); err != nil {
					t.Fatal(err)
				}
			}
			body, meta, err := s.Get(ctx, key, "")
			if err != nil || string(body) != bodies[1] || meta.SHA256 != object.Digest([]byte(bodies[1])) || meta.ResourceVersion != "2" {
				t.Fatalf("Get = %q %+v %v", body, meta, err)
			}
			versions, err := s.Versions(ctx, "clusterbackup/east/")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.versioned {
				if len(versions) != 1 || versions[0].Key != key || versions[0].Time.IsZero() {
					t.Errorf("versions %+v, want the one current document", versions)
				}
			} else {
				if len(versions) != 2 || versions[0].Time.Before(versions[1].Time) || versions[0].ID == versions[1].ID {
					t.Fatalf("versions %+v, want two, newest first", versions)
				}
				old, _, err := s.Get(ctx, key, versions[1].ID)
				if err != nil || string(old) != bodies[0] {
					t.Errorf("Get of the older version = %q, %v", old, err)
				}
				if err := s.Delete(ctx, key); err != nil {
					t.Fatal(err)
				}
				versions, _ = s.Versions(ctx, "clusterbackup/east/")
				if len(versions) != 3 || !versions[0].DeleteMarker {
					t.Errorf("after a delete: %+v, want a delete marker first", versions)
				}
			}
			if _, _, err := s.Get(ctx, "clusterbackup/east/default/configmaps/missing.yaml", ""); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
			}
		})
	}
}
