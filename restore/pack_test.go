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

// packedStore is a store holding n ConfigMaps cm-00, cm-01, ... of
// namespace a written at t0, and their restore pack (compressed against
// dict) written a minute later; put adds a version.
func packedStore(t *testing.T, layout object.Layout, n int, dict *pack.Dict, t0 time.Time) (*countingReader, func(key, id, body string, at time.Time)) {
	return signedPackedStore(t, layout, n, dict, t0, nil)
}

// signedPackedStore is packedStore with every document signed by signer.
func signedPackedStore(t *testing.T, layout object.Layout, n int, dict *pack.Dict, t0 time.Time, signer *object.Signer) (*countingReader, func(key, id, body string, at time.Time)) {
	t.Helper()
	r := &countingReader{memReader: memReader{bodies: map[string]string{}, metas: map[string]object.Meta{}}}
	put := func(key, id, body string, at time.Time) {
		r.versions = append([]object.Version{{Key: key, ID: id, Time: at, Size: int64(len(body)), ETag: object.ETag([]byte(body))}}, r.versions...)
		r.bodies[key+"@"+id] = body
		m := object.Meta{SHA256: object.Digest([]byte(body)), APIVersion: "v1"}
		m.Integrity = signer.Sign(key, m)
		r.metas[key+"@"+id] = m
	}
	var packed bytes.Buffer
	w := pack.NewWriter(&packed)
	for i := range n {
		key := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: fmt.Sprintf("cm-%02d", i)})
		body := fmt.Sprintf("kind: ConfigMap\nmetadata:\n  name: cm-%02d\n", i)
		put(key, "1", body, t0)
		if err := w.Add(key, r.metas[key+"@1"], pack.Compress(nil, []byte(body), dict)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	put(layout.PackKey(), "p1", packed.String(), t0.Add(time.Minute))
	return r, put
}

func TestPackServesTheChosenVersions(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	dict := pack.NewDict([]byte("kind: ConfigMap\nmetadata:\n  name: cm-dictionary-sample\n  namespace: a\n"))
	const n = 20
	r, put := packedStore(t, layout, n, dict, t0)
	// cm-0 changes after the pack.
	changed := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "cm-00"})
	put(changed, "2", "kind: ConfigMap\nmetadata:\n  name: cm-00\ndata: {v: '2'}\n", t0.Add(2*time.Minute))

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

// TestPackIsReadAsAsked: documents asked for in key order are read from
// the pack as they are asked for, without holding entries ahead; a key the
// pack does not hold does not make it read on to its end; asked out of
// order, the entries passed on the way wait for their turn.
func TestPackIsReadAsAsked(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	const n = 40
	r, put := packedStore(t, layout, n, nil, t0)
	// Written after the pack, between two of its keys.
	late := layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "cm-05a"})
	put(late, "1", "kind: ConfigMap\nmetadata:\n  name: cm-05a\n", t0.Add(2*time.Minute))

	ctx := context.Background()
	items, err := View(ctx, r, layout, nil, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p, reason, err := WithPack(ctx, r, layout, items, t0.Add(time.Hour))
	if err != nil || p == nil {
		t.Fatalf("WithPack: %v, %s", err, reason)
	}
	defer func() { _ = p.Close() }()
	for _, it := range items {
		if _, _, err := Read(ctx, p, it.Version.Key, it.Version.ID); err != nil {
			t.Fatal(err)
		}
		// At most the one read past a key the pack does not hold.
		if len(p.ahead) > 1 {
			t.Fatalf("after %s: %d entries held ahead, want at most one", it.Version.Key, len(p.ahead))
		}
		if it.Version.Key == late && (p.pack == nil || p.last > layout.Key(object.Ref{Resource: "configmaps", Namespace: "a", Name: "cm-06"})) {
			t.Fatalf("a key the pack does not hold read the pack on to %q", p.last)
		}
	}
	if fromPack, fromKeys := p.Read(); fromPack != n || fromKeys != 1 {
		t.Errorf("%d from the pack, %d from keys; want %d and 1", fromPack, fromKeys, n)
	}

	// Backwards: the last key first holds every other entry, each served
	// once when its turn comes.
	p, _, _ = WithPack(ctx, r, layout, items, t0.Add(time.Hour))
	defer func() { _ = p.Close() }()
	for i := len(items) - 1; i >= 0; i-- {
		if _, _, err := Read(ctx, p, items[i].Version.Key, items[i].Version.ID); err != nil {
			t.Fatal(err)
		}
		if i == len(items)-1 && len(p.ahead) != n-1 {
			t.Errorf("the last key first: %d entries held, want %d", len(p.ahead), n-1)
		}
	}
	if fromPack, fromKeys := p.Read(); fromPack != n || fromKeys != 1 || len(p.ahead) != 0 {
		t.Errorf("backwards: %d from the pack, %d from keys, %d held; want %d, 1, 0", fromPack, fromKeys, len(p.ahead), n)
	}

	// ReadAll reads the pack at once and lets it go; every entry serves.
	p, _, _ = WithPack(ctx, r, layout, items, t0.Add(time.Hour))
	p.ReadAll()
	if p.pack != nil || len(p.ahead) != n {
		t.Fatalf("ReadAll: the pack still open %v, %d entries held; want closed and %d", p.pack != nil, len(p.ahead), n)
	}
	for _, it := range items {
		if _, _, err := Read(ctx, p, it.Version.Key, it.Version.ID); err != nil {
			t.Fatal(err)
		}
	}
	if fromPack, fromKeys := p.Read(); fromPack != n || fromKeys != 1 {
		t.Errorf("after ReadAll: %d from the pack, %d from keys; want %d and 1", fromPack, fromKeys, n)
	}
}

// TestPackEntriesMustBeSigned: with a Signer, an entry whose tag it does
// not accept is read from its own key instead, so that a pack altered in
// the bucket costs speed, never a document.
func TestPackEntriesMustBeSigned(t *testing.T) {
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	signer := object.NewSigner([]byte("integrity-key-0123456789"))
	const n = 20
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		writtenWith    *object.Signer
		readWith       *object.Signer
		fromPack, keys int
	}{
		{"signed, checked", signer, signer, n, 0},
		{"unsigned, checked", nil, signer, 0, n},
		{"signed by another key, checked", object.NewSigner([]byte("another-key-0123456789")), signer, 0, n},
		{"unsigned, not checked", nil, nil, n, 0},
	} {
		r, _ := signedPackedStore(t, layout, n, nil, t0, tc.writtenWith)
		items, err := View(ctx, r, layout, nil, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := WithPack(ctx, r, layout, items, t0.Add(time.Hour))
		if err != nil || p == nil {
			t.Fatalf("%s: WithPack: %v", tc.name, err)
		}
		p.Signer = tc.readWith
		for _, f := range Fetch(ctx, p, items, 4) {
			if f.Err != nil {
				t.Errorf("%s: %s: %v", tc.name, f.Version.Key, f.Err)
			}
		}
		if fromPack, fromKeys := p.Read(); fromPack != tc.fromPack || fromKeys != tc.keys {
			t.Errorf("%s: %d from the pack, %d from keys; want %d and %d", tc.name, fromPack, fromKeys, tc.fromPack, tc.keys)
		}
		_ = p.Close()
	}
}
