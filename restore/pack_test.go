package restore

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
)

// countingReader counts the documents read from their own keys.
type countingReader struct {
	memReader
	gets atomic.Int32
}

func (c *countingReader) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	c.gets.Add(1)
	return c.memReader.Get(ctx, key, id)
}

func TestPackServesTheChosenVersions(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	dict := pack.NewDict([]byte("kind: ConfigMap\nmetadata:\n  name: cm-dictionary-sample\n  namespace: a\n"))
	r := &countingReader{memReader: memReader{bodies: map[string]string{}, metas: map[string]object.Meta{}}}
	put := func(key, id, body string, at time.Time) {
		r.versions = append([]object.Version{{Key: key, ID: id, Time: at, Size: int64(len(body)), ETag: object.ETag([]byte(body))}}, r.versions...)
		r.bodies[key+"@"+id] = body
		r.metas[key+"@"+id] = object.Meta{SHA256: object.Digest([]byte(body)), APIVersion: "v1"}
	}
	var packed bytes.Buffer
	w := pack.NewWriter(&packed)
	const n = 20
	for i := range n {
		key := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: fmt.Sprint("cm-", i)})
		body := fmt.Sprintf("kind: ConfigMap\nmetadata:\n  name: cm-%d\n", i)
		put(key, "1", body, t0)
		if err := w.Add(key, r.metas[key+"@1"], pack.Compress(nil, []byte(body), dict)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	put(layout.PackKey(), "p1", packed.String(), t0.Add(time.Minute))
	// cm-0 changes after the pack.
	changed := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "cm-0"})
	put(changed, "2", "kind: ConfigMap\nmetadata:\n  name: cm-0\ndata: {v: '2'}\n", t0.Add(2*time.Minute))

	for _, tc := range []struct {
		name               string
		at                 time.Time
		fromPack, fromKeys int
	}{
		{"now", t0.Add(time.Hour), n - 1, 1},
		{"before the change", t0.Add(90 * time.Second), n, 0},
		{"before the pack", t0.Add(30 * time.Second), n, 0}, // the oldest pack serves
	} {
		r.gets.Store(0)
		items, err := View(context.Background(), r, layout, nil, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		p, reason, err := WithPack(context.Background(), r, layout, items, tc.at)
		if err != nil || p == nil {
			t.Fatalf("%s: WithPack: %v, %s", tc.name, err, reason)
		}
		for _, f := range Fetch(context.Background(), p, items, 4) {
			if f.Err != nil {
				t.Errorf("%s: %s: %v", tc.name, f.Version.Key, f.Err)
			}
			if want := r.bodies[f.Version.Key+"@"+f.Version.ID]; string(f.Body) != want {
				t.Errorf("%s: %s: read %q, want %q", tc.name, f.Version.Key, f.Body, want)
			}
		}
		fromPack, fromKeys := p.Read()
		if fromPack != tc.fromPack || fromKeys != tc.fromKeys || int(r.gets.Load()) != 1+tc.fromKeys {
			t.Errorf("%s: %d from the pack, %d from keys, %d GETs; want %d, %d and %d (the pack and the keys)",
				tc.name, fromPack, fromKeys, r.gets.Load(), tc.fromPack, tc.fromKeys, 1+tc.fromKeys)
		}
	}

	items, _ := View(context.Background(), r, layout, nil, t0.Add(time.Hour))
	if p, reason, _ := WithPack(context.Background(), r, layout, items[:packMinItems-1], t0); p != nil || reason == "" {
		t.Errorf("a few objects: the pack is read (%q)", reason)
	}
	noETags := append([]Item(nil), items...)
	for i := range noETags {
		noETags[i].Version.ETag = ""
	}
	if p, reason, _ := WithPack(context.Background(), r, layout, noETags, t0); p != nil || reason == "" {
		t.Errorf("a store without MD5 ETags: the pack is read (%q)", reason)
	}
	if p, reason, _ := WithPack(context.Background(), r, object.Layout{Prefix: "clusterbackup", Cluster: "west"}, items, t0); p != nil || reason == "" {
		t.Errorf("no pack: %v (%q)", p, reason)
	}
}
