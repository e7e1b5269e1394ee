package restore

import (
	"context"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cluster-backup/cluster-backup/object"
)

// segmentWaves is waveOfKind by the layout's resource segments, so that
// an item's wave is known before its document is read and reading and
// writing overlap.
var segmentWaves = func() map[string]Wave {
	out := map[string]Wave{}
	for gk, w := range waveOfKind {
		out[segmentOf(gk.Group, gk.Kind)] = w
	}
	return out
}()

// segmentOf is the segment of a built-in kind.
func segmentOf(group, kind string) string {
	plural, _ := meta.UnsafeGuessKindToResource(schema.GroupVersionKind{Group: group, Kind: kind})
	return object.Segment(group, plural.Resource)
}

// waveOf is the wave of a segment's objects: the user's rules
// (--priorities) first, then the default order.
func (r *restorer) waveOf(seg string) Wave {
	if w, ok := r.opts.Waves[seg]; ok {
		return w
	}
	if w, ok := segmentWaves[seg]; ok {
		return w
	}
	return WaveRest
}

// Restore brings the selected items of the backup back into the target
// cluster, reading them from r: verified, decoded, mapped to their new
// namespaces, sanitised, in waves. Inside a wave, objects are written as
// they are read, parallel at a time; those with owner references wait for
// the end of their wave and go owners first. An object whose live copy
// already equals the backup is not written. It returns one result per
// object; an object that fails does not stop the others.
func Restore(ctx context.Context, target Target, r Reader, items []Item, opts Options) []Result {
	rs := newRestorer(target, opts)
	rs.selection(items)
	byWave := make([][]Item, waves)
	for _, it := range items {
		w := rs.waveOf(it.Segment)
		byWave[w] = append(byWave[w], it)
	}
	keys := keysOf(items, opts.NamespaceMapping)
	// carried are dependents whose owner comes in a later wave: they wait
	// for the end of the owner's wave, so that their references can point
	// at it.
	carried := make([][]*planned, waves)
	var all []*planned
	for wave := range waves {
		var extra []*planned
		if wave == WaveCluster {
			extra = impliedFromKeys(items, opts.NamespaceMapping)
			rs.awaitTerminatingNamespaces(ctx, namespaceNames(byWave[wave], extra, opts.NamespaceMapping))
		}
		done, streamed := rs.stream(ctx, r, byWave[wave], extra, keys)
		deferred := carried[wave]
		for _, p := range streamed {
			if w := rs.ownersWave(p.obj, keys); w > wave {
				carried[w] = append(carried[w], p)
				continue
			}
			deferred = append(deferred, p)
		}
		all = append(append(all, done...), deferred...)
		inSet := map[ownerKey]*planned{}
		for _, p := range all {
			inSet[p.owner] = p
		}
		for _, p := range deferred {
			p.depth = depth(p, inSet, 0)
		}
		for _, group := range byDepth(deferred) {
			rs.applyAll(ctx, group)
		}
		if wave == WaveCRDs && len(done)+len(deferred) > 0 {
			rs.awaitCRDs(ctx, append(done, deferred...))
			target.Mapper.Reset()
		}
	}
	if opts.Prune {
		rs.prune(ctx, all, keys)
	}
	sort.SliceStable(rs.results, func(i, j int) bool { return rs.results[i].Key < rs.results[j].Key })
	return rs.results
}

// ownersWave is the latest wave in which one of obj's owners that the
// restore holds (keys) is written.
func (r *restorer) ownersWave(obj *unstructured.Unstructured, keys map[string]bool) Wave {
	w := Wave(0)
	for _, ref := range obj.GetOwnerReferences() {
		k := refKey(obj, ref.APIVersion, ref.Kind, ref.Name)
		if keys[segmentKey(k)] {
			w = max(w, r.waveOf(segmentOf(k.group, k.kind)))
		}
	}
	return w
}

// stream reads the items of one wave and writes those without owner
// references as they come; it returns what it wrote and what waits for the
// end of the wave.
func (r *restorer) stream(ctx context.Context, reader Reader, items []Item, extra []*planned, keys map[string]bool) (done, deferred []*planned) {
	var mu sync.Mutex
	apply := make(chan *planned)
	var appliers sync.WaitGroup
	for range r.opts.Parallel {
		appliers.Go(func() {
			for p := range apply {
				outcome, reason := r.apply(ctx, p)
				r.report(resultOf(p.Item, p.obj), outcome, reason)
				// Written: only its identity is needed from now on (owner
				// lookups, prune), so the document can be collected.
				p.obj = skeleton(p.obj)
			}
		})
	}
	for _, p := range extra {
		apply <- p
		done = append(done, p)
	}
	next := make(chan Item)
	var readers sync.WaitGroup
	for range r.opts.Parallel {
		readers.Go(func() {
			for it := range next {
				p := r.prepare(ctx, reader, it, keys)
				if p == nil {
					continue
				}
				mu.Lock()
				owned := len(p.obj.GetOwnerReferences()) > 0
				if owned {
					deferred = append(deferred, p)
				} else {
					done = append(done, p)
				}
				mu.Unlock()
				if !owned {
					apply <- p
				}
			}
		})
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	readers.Wait()
	close(apply)
	appliers.Wait()
	return done, deferred
}

// prepare reads and decides one item; nil means it is not written
// (reported, or left out by the selection).
func (r *restorer) prepare(ctx context.Context, reader Reader, it Item, keys map[string]bool) *planned {
	f := Fetched{Item: it}
	if !it.Unknown {
		f.Body, f.Meta, f.Err = Read(ctx, reader, it.Version.Key, it.Version.ID)
	}
	return r.decide(f, func(k ownerKey) bool { return keys[segmentKey(k)] })
}

// skeleton is obj's identity without its content.
func skeleton(obj *unstructured.Unstructured) *unstructured.Unstructured {
	s := &unstructured.Unstructured{}
	s.SetAPIVersion(obj.GetAPIVersion())
	s.SetKind(obj.GetKind())
	s.SetNamespace(obj.GetNamespace())
	s.SetName(obj.GetName())
	return s
}

// segmentKey names an owner of a built-in kind as its item would.
func segmentKey(k ownerKey) string {
	return segmentOf(k.group, k.kind) + "/" + k.namespace + "/" + k.name
}

// keysOf is the set of segment/namespace/name of the items, namespaces
// mapped.
func keysOf(items []Item, mapping map[string]string) map[string]bool {
	out := make(map[string]bool, len(items))
	for _, it := range items {
		ns := it.Namespace
		if to, ok := mapping[ns]; ok && ns != "" {
			ns = to
		}
		out[it.Segment+"/"+ns+"/"+it.Name] = true
	}
	return out
}

// impliedFromKeys are the Namespaces to create for the objects restored
// into them when the backup does not hold their Namespace objects.
func impliedFromKeys(items []Item, mapping map[string]string) []*planned {
	held, needed := map[string]bool{}, map[string]bool{}
	mapped := func(ns string) string {
		if to, ok := mapping[ns]; ok {
			return to
		}
		return ns
	}
	for _, it := range items {
		switch {
		case it.Segment == "namespaces" && it.Namespace == "":
			held[mapped(it.Name)] = true
		case it.Namespace != "":
			needed[mapped(it.Namespace)] = true
		}
	}
	var out []*planned
	for ns := range needed {
		if held[ns] {
			continue
		}
		obj := &unstructured.Unstructured{}
		obj.SetAPIVersion("v1")
		obj.SetKind("Namespace")
		obj.SetName(ns)
		out = append(out, &planned{
			Fetched: Fetched{Item: Item{Key: object.Key{Segment: "namespaces", Name: ns}}},
			obj:     obj, owner: ownerKeyOf(obj), implied: true,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].obj.GetName() < out[j].obj.GetName() })
	return out
}

// namespaceNames are the Namespaces a wave restores.
func namespaceNames(items []Item, extra []*planned, mapping map[string]string) []string {
	var out []string
	for _, it := range items {
		if it.Segment == "namespaces" && it.Namespace == "" {
			name := it.Name
			if to, ok := mapping[name]; ok {
				name = to
			}
			out = append(out, name)
		}
	}
	for _, p := range extra {
		out = append(out, p.obj.GetName())
	}
	return out
}
