package watcher

import (
	"cmp"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// caches is the watcher's read model: the informers' caches as the rules
// in force judge them. The writer renders documents from it, the snapshot
// pass compares it with the store, the restore pack and the owner lookups
// of the filter read it. The Manager, which owns the informers' lifecycle
// (discovery, start, stop), replaces its informers and rules under mu after
// each discovery round; everything here only reads.
type caches struct {
	log *zap.Logger

	mu sync.RWMutex
	// rules are those in force: the informers were built for them by the
	// last successful discovery round. Every read of the caches judges
	// objects by them, so that a reload that cannot be applied yet (the
	// API server is down) never judges old caches by new rules.
	rules     filter.Rules
	informers map[schema.GroupResource]*informer
	kinds     map[schema.GroupKind]schema.GroupResource
	// segments resolves a stored resource segment to its type, for the
	// types of the last discovery round and the running informers; a
	// type without an informer is one the rules in force leave out.
	segments     object.Segments
	failedGroups []string // groups whose discovery failed last round

	// awaiting are the objects left out because an owner they name is
	// not in its type's cache yet, by that owner's UID: an owner and its
	// dependents come on different watches, in any order. When the owner
	// arrives they are judged again (follow-owner-references).
	awaitMu  sync.Mutex
	awaiting map[types.UID]map[object.Ref]struct{}
	// awaited is len(awaiting), read without the lock on every event.
	awaited atomic.Int64
}

// maxAwaiting bounds the owners awaited; beyond it they are forgotten,
// and the next snapshot pass judges their dependents again.
const maxAwaiting = 100_000

// Synced reports whether every informer has synced or was denied.
func (c *caches) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, inf := range c.informers {
		if !inf.inf.HasSynced() && !inf.denied.Load() {
			return false
		}
	}
	return true
}

// Incomplete names, sorted, the watched types whose caches are not
// complete (listing, failing, or denied) and the API groups whose
// discovery failed in the last round ("*.group"). Nothing stored for them
// is ever pruned.
func (c *caches) Incomplete() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	for _, inf := range c.informers {
		if !inf.complete() {
			out = append(out, inf.res.Segment())
		}
	}
	for _, g := range c.failedGroups {
		out = append(out, "*."+g)
	}
	sort.Strings(out)
	return out
}

// Denied names the types whose list the API server forbade: the RBAC of
// the service does not cover them. They are among Incomplete.
func (c *caches) Denied() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	for _, inf := range c.informers {
		if inf.denied.Load() {
			out = append(out, inf.res.Segment())
		}
	}
	sort.Strings(out)
	return out
}

// Resolve maps a stored resource segment to its type, and reports whether
// a stored key of it may be deleted when the caches do not hold its
// object: only when its type has a complete cache, or when the last
// discovery round found the type and the rules in force leave it out. A
// type that is unknown (not served, or its group failing discovery),
// listing, failing or denied is not prunable (snapshot.Source).
func (c *caches) Resolve(seg string) (gr object.GroupResource, prunable bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	gr, known := c.segments.Resolve(seg)
	if !known {
		return gr, false
	}
	if inf := c.informers[schema.GroupResource(gr)]; inf != nil {
		return gr, inf.complete()
	}
	return gr, true // discovered, and left out by the rules in force
}

// completeInformers are the informers whose caches are complete,
// cluster-scoped types first, then by name, with the rules in force.
func (c *caches) completeInformers() ([]*informer, filter.Rules) {
	c.mu.RLock()
	rules := c.rules
	all := slices.Collect(maps.Values(c.informers))
	c.mu.RUnlock()
	all = slices.DeleteFunc(all, func(inf *informer) bool { return !inf.complete() })
	slices.SortFunc(all, func(a, b *informer) int {
		if a.res.Namespaced != b.res.Namespaced {
			return cmp.Compare(boolInt(a.res.Namespaced), boolInt(b.res.Namespaced))
		}
		return cmp.Compare(a.res.Group+"/"+a.res.Resource, b.res.Group+"/"+b.res.Resource)
	})
	return all, rules
}

// EachStored calls visit for every object of the complete caches that the
// rules keep and that can be stored, with the metadata its document is
// stored with and the document as the caches hold it, compressed (the
// restore pack copies it as is). Cluster-scoped types come first, as in a
// restore's first waves, so that a pack cut short still holds them. An
// error of visit ends the walk.
func (c *caches) EachStored(visit func(ref object.Ref, meta object.Meta, frame pack.Frame) error) error {
	complete, rules := c.completeInformers()
	for _, inf := range complete {
		for _, item := range inf.inf.GetStore().List() {
			obj, isObj := item.(*cached)
			if !isObj || obj.err != nil || !c.keep(rules, inf, obj) {
				continue
			}
			meta, err := obj.meta(inf.apiVersion)
			if err != nil {
				continue // cannot be read back: the pack leaves it to its key
			}
			ref := object.Ref{Group: inf.res.Group, Resource: inf.res.Resource, Namespace: obj.GetNamespace(), Name: obj.GetName()}
			if err := visit(ref, meta, obj.packed); err != nil {
				return err
			}
		}
	}
	return nil
}

// Document renders the current state of ref from the caches (sink.Source).
// Its state is Unknown when ref's type has no complete cache and the object
// is not in it.
func (c *caches) Document(ref object.Ref) (object.Document, object.State, error) {
	gr := schema.GroupResource{Group: ref.Group, Resource: ref.Resource}
	c.mu.RLock()
	inf := c.informers[gr]
	rules := c.rules
	stored, known := c.segments.Resolve(ref.Segment())
	c.mu.RUnlock()
	if inf == nil {
		if known && schema.GroupResource(stored) == gr {
			return object.Document{}, object.Absent, nil // left out by the rules in force
		}
		return object.Document{}, object.Unknown, nil
	}
	obj, ok := inf.get(cache.NewObjectName(ref.Namespace, ref.Name).String())
	if !ok {
		if inf.complete() {
			return object.Document{}, object.Absent, nil
		}
		return object.Document{}, object.Unknown, nil
	}
	if !c.keep(rules, inf, obj) {
		return object.Document{}, object.Absent, nil
	}
	doc, err := obj.document(inf.apiVersion)
	if err != nil {
		return object.Document{}, object.Present, err
	}
	return doc, object.Present, nil
}

// Check re-parses a document about to be written, when validate-yaml is on
// and the emitter did not write it (sink.Source).
func (c *caches) Check(ref object.Ref, doc object.Document) error {
	c.mu.RLock()
	rules := c.rules
	inf := c.informers[schema.GroupResource{Group: ref.Group, Resource: ref.Resource}]
	c.mu.RUnlock()
	kind := ""
	if inf != nil {
		kind = inf.res.Kind
	}
	return EncodeOptions(rules, nil).Check(doc.Body, doc.Shape, doc.Emitted, doc.Meta.APIVersion, kind, ref.Name)
}

// keep applies the object filters. An object left out while an owner it
// names is not cached yet awaits that owner.
func (c *caches) keep(rules filter.Rules, inf *informer, obj *cached) bool {
	probe := ownerProbe{caches: c}
	keep, reason := rules.KeepObject(inf.res, obj, inf.selected.Load(), &probe)
	if !keep && len(probe.missing) > 0 {
		c.await(probe.missing, object.Ref{Group: inf.res.Group, Resource: inf.res.Resource, Namespace: obj.GetNamespace(), Name: obj.GetName()})
	}
	if !keep && inf.selected.Load() {
		c.log.Debug("Object filtered out by configuration", logging.Op(logging.OpResourceFilter),
			logging.Namespace(obj.GetNamespace()), logging.Resource(inf.res.Segment()),
			logging.Data(map[string]any{"name": obj.GetName(), "reason": reason}))
	}
	return keep
}

// Owner finds an owner in the caches (filter.Owners).
func (c *caches) Owner(namespace string, ref metav1.OwnerReference) (metav1.Object, bool, bool) {
	owner, selected, _, ok := c.owner(namespace, ref)
	return owner, selected, ok
}

// owner finds an owner in the caches; watched says whether its type has
// an informer, so that an owner not found may still arrive.
func (c *caches) owner(namespace string, ref metav1.OwnerReference) (owner metav1.Object, selected, watched, ok bool) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return nil, false, false, false
	}
	c.mu.RLock()
	gr, known := c.kinds[schema.GroupKind{Group: gv.Group, Kind: ref.Kind}]
	inf := c.informers[gr]
	c.mu.RUnlock()
	if !known || inf == nil {
		return nil, false, false, false
	}
	if !inf.res.Namespaced {
		namespace = ""
	}
	found, ok := inf.get(cache.NewObjectName(namespace, ref.Name).String())
	if !ok {
		return nil, false, true, false
	}
	return found, inf.selected.Load(), true, true
}

// ownerProbe finds owners in the caches (filter.Owners) and notes those
// of a watched type that are not cached (yet).
type ownerProbe struct {
	*caches
	missing []types.UID
}

func (p *ownerProbe) Owner(namespace string, ref metav1.OwnerReference) (metav1.Object, bool, bool) {
	owner, selected, watched, ok := p.owner(namespace, ref)
	if !ok && watched && ref.UID != "" {
		p.missing = append(p.missing, ref.UID)
	}
	return owner, selected, ok
}

// await records ref as a dependent of the owners not cached yet.
func (c *caches) await(owners []types.UID, ref object.Ref) {
	c.awaitMu.Lock()
	defer c.awaitMu.Unlock()
	if c.awaiting == nil || len(c.awaiting) >= maxAwaiting {
		c.awaiting = map[types.UID]map[object.Ref]struct{}{}
	}
	for _, uid := range owners {
		if c.awaiting[uid] == nil {
			c.awaiting[uid] = map[object.Ref]struct{}{}
		}
		c.awaiting[uid][ref] = struct{}{}
	}
	c.awaited.Store(int64(len(c.awaiting)))
}

// arrived returns, and forgets, the dependents that awaited the owner of
// uid.
func (c *caches) arrived(uid types.UID) []object.Ref {
	if c.awaited.Load() == 0 {
		return nil // the common case, without follow-owner-references
	}
	c.awaitMu.Lock()
	defer c.awaitMu.Unlock()
	deps := c.awaiting[uid]
	if deps == nil {
		return nil
	}
	delete(c.awaiting, uid)
	c.awaited.Store(int64(len(c.awaiting)))
	out := make([]object.Ref, 0, len(deps))
	for ref := range deps {
		out = append(out, ref)
	}
	return out
}

// Each visits every cached object of every watched type whose cache is
// complete with its document's hash, without decompressing the document
// (snapshot.Source).
func (c *caches) Each(visit func(ref object.Ref, sum string, ok bool, err error)) {
	complete, rules := c.completeInformers()
	for _, inf := range complete {
		inf.passed.Store(true)
		for _, item := range inf.inf.GetStore().List() {
			obj, isObj := item.(*cached)
			if !isObj {
				continue
			}
			ref := object.Ref{Group: inf.res.Group, Resource: inf.res.Resource, Namespace: obj.GetNamespace(), Name: obj.GetName()}
			switch {
			case !c.keep(rules, inf, obj):
				visit(ref, "", false, nil)
			case obj.err != nil:
				visit(ref, "", false, obj.err)
			default:
				visit(ref, obj.sumHex(), true, nil)
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
