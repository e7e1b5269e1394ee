package snapshot

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// bodies is a store of documents read back by key, with the metadata
// written beside them.
type bodies map[string]struct {
	body string
	meta object.Meta
}

func (b bodies) Get(_ context.Context, key, _ string) ([]byte, object.Meta, error) {
	d, ok := b[key]
	if !ok {
		return nil, object.Meta{}, object.ErrNotFound
	}
	return []byte(d.body), d.meta, nil
}

func TestVerifyRewritesWhatWasAlteredInTheStore(t *testing.T) {
	var src fakeSource
	var st fakeStore
	store := bodies{}
	for i := range 10 {
		ref := cm("a", fmt.Sprint("cm-", i))
		body := fmt.Sprint("body ", i)
		src.objects = append(src.objects, cached{ref: ref, body: body})
		st.stored = append(st.stored, stored(ref, body))
		store[testLayout.Key(ref)] = struct {
			body string
			meta object.Meta
		}{body, object.Meta{SHA256: object.Digest([]byte(body))}}
	}
	// Altered in the bucket: the content changed, the metadata kept.
	altered := testLayout.Key(cm("a", "cm-3"))
	d := store[altered]
	d.body = "tampered"
	store[altered] = d

	w := &fakeWriter{outcome: func(object.Ref) object.Outcome { return object.Written }}
	m := metrics.New(prometheus.NewRegistry())
	p := &Pass{Layout: testLayout, BatchSize: 3, Settings: object.NewSettings(true, 1), Source: src, Store: st, Writer: w, Ledger: w, Log: zap.NewNop(), Metrics: m,
		Verify: &Verify{Reader: store, Interval: time.Hour}} // no period: everything each pass
	res, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(w.applied) != 1 || w.applied[0] != cm("a", "cm-3") || !slices.Equal(w.forgotten, []string{altered}) {
		t.Errorf("written %v, forgotten %v: want the altered object only", w.applied, w.forgotten)
	}
	if res.BackedUp != 1 || res.Unchanged != 9 {
		t.Errorf("result %+v", res)
	}
	if testutil.ToFloat64(m.VerifyFailures) != 1 || testutil.ToFloat64(m.Verified) != 10 {
		t.Errorf("verify_failures %v, verified %v", testutil.ToFloat64(m.VerifyFailures), testutil.ToFloat64(m.Verified))
	}
}

func TestVerifyShareGoesRoundEveryKeyOncePerInterval(t *testing.T) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%04d", i)
	}
	base := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	now := base
	v := &Verify{Interval: 24 * time.Hour, Period: time.Hour, Now: func() time.Time { return now }}
	seen := map[string]int{}
	for pass := range 24 {
		now = base.Add(time.Duration(pass) * time.Hour)
		share := v.share(slices.Clone(keys))
		if len(share) > 1000/24+2 {
			t.Fatalf("pass %d reads %d of 1000 keys, want about 1/24", pass, len(share))
		}
		for _, k := range share {
			seen[k]++
		}
	}
	if len(seen) != len(keys) {
		t.Errorf("24 hourly passes read %d of %d keys, want all", len(seen), len(keys))
	}
	if got := v.share(nil); got != nil {
		t.Errorf("share of nothing: %v", got)
	}
}
