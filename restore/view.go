// Package restore reads a cluster's backup back. It owns the view of the
// bucket at any time its versions hold (which version of each key was in
// force), reading and verifying the stored documents, and bringing them
// back into a cluster: sanitised as a new object, in dependency order, with
// server-side apply, with a report per object.
//
// The files follow a restore's flow, capture in reverse: view.go and
// pack.go read the store (which version of each key, verified); plan.go,
// objects.go and controlplane.go decide, as pure functions, what becomes of
// each document (believed, selected, mapped, skipped, sanitised, ordered,
// eligible for prune); restore.go is the entry point that streams each wave
// from the store to the executor; apply.go and adaptive.go write to the
// cluster; diff.go compares instead of writing.
package restore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/object"
)

// Reader reads what a store holds at any of its versions (sink.MinIO,
// sink.Dir).
type Reader interface {
	// Versions lists every version of every key under prefix, each key's
	// newest first.
	Versions(ctx context.Context, prefix string) ([]object.Version, error)
	// Get reads one version of key ("" is the current one) with the
	// metadata written with it.
	Get(ctx context.Context, key, id string) ([]byte, object.Meta, error)
}

// At picks, for every key, the version in force at t: its newest version
// taken at or before t. A key whose version then is a delete marker, or
// that had no version yet, is absent. versions lists each key's versions
// newest first, as Reader.Versions returns them.
func At(versions []object.Version, t time.Time) []object.Version {
	var out []object.Version
	decided := map[string]bool{}
	for _, v := range versions {
		if decided[v.Key] || v.Time.After(t) {
			continue
		}
		decided[v.Key] = true
		if !v.DeleteMarker {
			out = append(out, v)
		}
	}
	return out
}

// Item is one object of the backup as it was at the chosen time.
type Item struct {
	object.Key
	Version object.Version
	// Unknown: the store cannot say what the object was at the chosen
	// time. It existed then (its oldest version kept, Version, was created
	// before that time, or is a delete marker), but no version from then
	// is kept: the store keeps one version per key, or older versions
	// expired. Such an item is never restored and never pruned.
	Unknown bool
}

// undetermined are, for each key with versions but none taken at or
// before t, its oldest version: either the key did not exist at t, or the
// store no longer keeps what it held then. versions lists each key's
// versions newest first.
func undetermined(versions []object.Version, t time.Time) []object.Version {
	oldest := map[string]object.Version{}
	decided := map[string]bool{}
	var order []string
	for _, v := range versions {
		if !v.Time.After(t) {
			decided[v.Key] = true
			continue
		}
		if _, seen := oldest[v.Key]; !seen {
			order = append(order, v.Key)
		}
		oldest[v.Key] = v
	}
	var out []object.Version
	for _, k := range order {
		if !decided[k] {
			out = append(out, oldest[k])
		}
	}
	return out
}

// existedAt decides, for a key whose oldest version kept is newer than t,
// whether its object existed at t: a delete marker means something was
// there before it; otherwise the object's creationTimestamp says. A
// version that cannot be read or carries no creation time counts as
// existing: unknown is never restored and never pruned, which is the safe
// side.
func existedAt(ctx context.Context, r Reader, oldest object.Version, t time.Time) bool {
	if oldest.DeleteMarker {
		return true
	}
	body, _, err := Read(ctx, r, oldest.Key, oldest.ID)
	if err != nil {
		return true
	}
	var doc struct {
		Metadata struct {
			CreationTimestamp metav1.Time `json:"creationTimestamp"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return true
	}
	created := doc.Metadata.CreationTimestamp
	// A creation time has whole seconds: the object was created within
	// the second after it. Within that second of t the store's versions
	// cannot tell either, and the key counts as absent, as a listing of
	// full history says (for --at in whole seconds, as it is usually
	// given, the rule is exact).
	return created.IsZero() || !t.Before(created.Add(time.Second))
}

// View lists the objects of one cluster's backup at t. With namespaces
// set, only their folders and the cluster-scoped folder are listed, each
// in parallel (listing costs one request per 1,000 versions); otherwise
// the whole cluster prefix. Keys outside the layout (the identity marker)
// are left out. An object that existed at t but whose version from then
// the store no longer keeps is an Unknown item (see Item): a key whose
// versions are all newer than t has its oldest version read for the
// object's creation time.
func View(ctx context.Context, r Reader, layout object.Layout, namespaces []string, t time.Time) ([]Item, error) {
	prefixes := []string{layout.Root()}
	if len(namespaces) > 0 {
		prefixes = []string{layout.Root() + object.ClusterScope + "/"}
		for _, ns := range namespaces {
			prefixes = append(prefixes, layout.Root()+ns+"/")
		}
	}
	lists := make([][]object.Version, len(prefixes))
	errs := make([]error, len(prefixes))
	var wg sync.WaitGroup
	for i, p := range prefixes {
		wg.Go(func() { lists[i], errs[i] = r.Versions(ctx, p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var items []Item
	var candidates []Item
	for _, list := range lists {
		for _, v := range At(list, t) {
			if k, ok := layout.Parse(v.Key); ok {
				items = append(items, Item{Key: k, Version: v})
			}
		}
		for _, v := range undetermined(list, t) {
			if k, ok := layout.Parse(v.Key); ok {
				candidates = append(candidates, Item{Key: k, Version: v, Unknown: true})
			}
		}
	}
	existed := make([]bool, len(candidates))
	next := make(chan int)
	var readers sync.WaitGroup
	for range min(16, len(candidates)) {
		readers.Go(func() {
			for i := range next {
				existed[i] = existedAt(ctx, r, candidates[i].Version, t)
			}
		})
	}
	for i := range candidates {
		next <- i
	}
	close(next)
	readers.Wait()
	for i, it := range candidates {
		if existed[i] {
			items = append(items, it)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Version.Key < items[j].Version.Key })
	return items, nil
}

// Known are the items whose state at the chosen time the store can tell.
func Known(items []Item) []Item {
	out := make([]Item, 0, len(items))
	for _, it := range items {
		if !it.Unknown {
			out = append(out, it)
		}
	}
	return out
}

// History lists the versions of one key, newest first, taken between since
// and until (zero times do not bound).
func History(ctx context.Context, r Reader, key string, since, until time.Time) ([]object.Version, error) {
	all, err := r.Versions(ctx, key)
	if err != nil {
		return nil, err
	}
	var out []object.Version
	for _, v := range all {
		if v.Key != key || (!since.IsZero() && v.Time.Before(since)) || (!until.IsZero() && v.Time.After(until)) {
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// ErrAltered marks a stored document whose bytes do not match the SHA-256
// recorded when it was written.
var ErrAltered = errors.New("the stored file was altered: its content does not match its sha256 metadata")

// Read reads one version of key and verifies it against its recorded
// SHA-256; a mismatch is an error naming the key.
func Read(ctx context.Context, r Reader, key, id string) ([]byte, object.Meta, error) {
	body, meta, err := r.Get(ctx, key, id)
	if err != nil {
		return nil, meta, err
	}
	if meta.SHA256 == "" {
		return nil, meta, fmt.Errorf("%s: no sha256 metadata to verify it against: %w", key, ErrAltered)
	}
	if object.Digest(body) != meta.SHA256 {
		return nil, meta, fmt.Errorf("%s: %w", key, ErrAltered)
	}
	return body, meta, nil
}

// Signed is a Reader that refuses, by name, every document whose integrity
// tag Signer does not accept (object.ErrForged; object.ErrUnsigned unless
// AcceptUnsigned): whoever can write the bucket can store a document with
// a matching sha256, never with its tag. A nil Signer accepts everything.
// It goes in front of every other Reader (the restore pack's included), so
// that nothing is read around it.
type Signed struct {
	Reader
	Signer         *object.Signer
	AcceptUnsigned bool
}

// Get reads key and checks its tag.
func (s Signed) Get(ctx context.Context, key, id string) ([]byte, object.Meta, error) {
	body, meta, err := s.Reader.Get(ctx, key, id)
	if err != nil {
		return nil, meta, err
	}
	if err := s.Signer.Check(key, meta); err != nil && (!s.AcceptUnsigned || !errors.Is(err, object.ErrUnsigned)) {
		if errors.Is(err, object.ErrUnsigned) {
			err = fmt.Errorf("%w (written before an integrity key existed, or not by the service; --accept-unsigned reads it)", err)
		}
		return nil, meta, fmt.Errorf("%s: %w", key, err)
	}
	return body, meta, nil
}

// Fetched is one item with its verified document, or why it could not be
// read.
type Fetched struct {
	Item
	Body []byte
	Meta object.Meta
	Err  error
}

// Fetch reads the items' documents, parallel at a time, each verified;
// an Unknown item has none to read.
func Fetch(ctx context.Context, r Reader, items []Item, parallel int) []Fetched {
	out := make([]Fetched, len(items))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, parallel) {
		wg.Go(func() {
			for i := range next {
				f := Fetched{Item: items[i]}
				if !f.Unknown {
					f.Body, f.Meta, f.Err = Read(ctx, r, items[i].Version.Key, items[i].Version.ID)
				}
				out[i] = f
			}
		})
	}
	for i := range items {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}
