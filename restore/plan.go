package restore

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/cluster-backup/cluster-backup/object"
)

// This file holds what a restore decides about each object, as pure
// functions of the object, its key and the options: whether the document
// is believed, whether the selection takes it, where it goes, whether it
// is skipped and why, and how it is made fit for the target cluster. The
// executor (apply.go) only reads, orders and writes.

// ErrMisfiled marks a document whose object is not the one its key names:
// the service never writes one, so it is refused, never applied.
var ErrMisfiled = fmt.Errorf("the document is not the object its key names")

// decide reads one fetched document into what the restore does with it:
// nil when it is not written (reported, or left out by the selection). The
// document is believed only when it is the object its key names; it is
// decrypted, patched by the resource modifiers, mapped to its new
// namespace, checked against the skip rules and sanitised.
func (r *restorer) decide(f Fetched, restored func(ownerKey) bool) *planned {
	if f.Unknown {
		r.report(resultOf(f.Item, nil), Unknown, "the store keeps no version of it from the chosen time; its oldest is from "+
			f.Version.Time.UTC().Format(time.RFC3339)+": neither restored nor pruned")
		return nil
	}
	if f.Err != nil {
		r.report(resultOf(f.Item, nil), Failed, f.Err.Error())
		return nil
	}
	obj, err := Decode(f.Body)
	if err != nil {
		r.report(resultOf(f.Item, nil), Failed, "cannot decode the stored document: "+err.Error())
		return nil
	}
	if err := CheckKey(obj, f.Key, r.segmentOfKind(obj)); err != nil {
		r.report(resultOf(f.Item, nil), Failed, err.Error())
		return nil
	}
	if err := r.opts.Decrypter.Decrypt(obj.Object); err != nil {
		r.report(resultOf(f.Item, obj), Failed, "cannot decrypt: "+err.Error())
		return nil
	}
	if !Selected(obj, r.opts.Selector, r.namespaces) {
		return nil
	}
	// Conditions are judged on the object as stored, in its own namespace.
	if _, err := r.opts.Modifiers.Apply(obj, f.Segment); err != nil {
		r.report(resultOf(f.Item, obj), Failed, err.Error())
		return nil
	}
	MapNamespaces(obj, r.opts.NamespaceMapping)
	if reason := SkipReason(obj, restored, r.opts.IncludeControlPlane); reason != "" {
		r.report(resultOf(f.Item, obj), Skipped, reason)
		return nil
	}
	Sanitize(obj, r.opts.PreserveNodePorts)
	note := Reclaimed(obj, f.Meta.ClusterUID, r.opts.ClusterUID, r.opts.KeepReclaimPolicy)
	return &planned{Fetched: Fetched{Item: f.Item, Meta: f.Meta}, obj: obj, owner: ownerKeyOf(obj), note: note}
}

// plan decides every fetched document, restored telling which owners the
// whole selection restores; each document's bytes are let go once decided.
func (r *restorer) plan(fetched []Fetched, restored func(ownerKey) bool) []*planned {
	var plan []*planned
	for i := range fetched {
		p := r.decide(fetched[i], restored)
		fetched[i].Body = nil // decided: the bytes can be collected
		if p != nil {
			plan = append(plan, p)
		}
	}
	return plan
}

// restoredBy is whether the items restore an owner.
func restoredBy(items []Item, mapping map[string]string) func(ownerKey) bool {
	keys := keysOf(items, mapping)
	return func(k ownerKey) bool { return keys[segmentKey(k)] }
}

// folders groups items by type and namespace, in their order: a diff
// reads, decodes and compares one folder at a time, so that it never holds
// the whole backup.
func folders(items []Item) [][]Item {
	var out [][]Item
	at := map[string]int{}
	for _, it := range items {
		f := it.Segment + "/" + it.Namespace
		i, ok := at[f]
		if !ok {
			i = len(out)
			at[f] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], it)
	}
	return out
}

// depth is how many of p's owners (transitively) are restored with it.
func depth(p *planned, inSet map[ownerKey]*planned, seen int) int {
	if seen > 16 {
		return seen // a cycle: give up ordering
	}
	d := 0
	for _, ref := range p.obj.GetOwnerReferences() {
		if owner, ok := inSet[refKey(p.obj, ref.APIVersion, ref.Kind, ref.Name)]; ok && owner != p {
			d = max(d, 1+depth(owner, inSet, seen+1))
		}
	}
	return d
}

func byDepth(ps []*planned) [][]*planned {
	var groups [][]*planned
	for _, p := range ps {
		for len(groups) <= p.depth {
			groups = append(groups, nil)
		}
		groups[p.depth] = append(groups[p.depth], p)
	}
	return groups
}

// selection records what the selection restores into.
func (r *restorer) selection(items []Item) {
	r.namespaces = map[string]bool{}
	for _, it := range items {
		if it.Namespace != "" {
			r.namespaces[it.Namespace] = true
		}
	}
}

// CheckKey refuses a document whose resource, namespace or name differ
// from its key. segment is the key segment of the document's kind when the
// target cluster knows it ("" when it does not: the document's group is
// then checked against the key's).
func CheckKey(obj *unstructured.Unstructured, key object.Key, segment string) error {
	where := key.Segment + "/" + key.Name
	if key.Namespace != "" {
		where = key.Namespace + "/" + where
	}
	gvk := obj.GroupVersionKind()
	switch {
	case obj.GetName() != key.Name:
		return fmt.Errorf("%w: %s holds %s %q", ErrMisfiled, where, gvk.Kind, obj.GetName())
	case obj.GetNamespace() != key.Namespace:
		return fmt.Errorf("%w: %s holds a %s of namespace %q", ErrMisfiled, where, gvk.Kind, obj.GetNamespace())
	case segment != "" && segment != key.Segment:
		return fmt.Errorf("%w: %s holds a %s (%s)", ErrMisfiled, where, gvk.Kind, segment)
	case segment == "" && !mayBeSegmentOf(key.Segment, gvk):
		return fmt.Errorf("%w: %s holds a %s of group %q", ErrMisfiled, where, gvk.Kind, gvk.Group)
	}
	return nil
}

// mayBeSegmentOf reports whether seg can be the key segment of gvk's
// resource when the target cannot say which resource serves the kind: the
// layout spells the group as seg does (object.Segment: bare for the core
// and built-in groups, plural.group for the others), and for the built-in
// groups, whose segments do not name the group, the plural is the kind's.
func mayBeSegmentOf(seg string, gvk schema.GroupVersionKind) bool {
	suffix := object.Segment(gvk.Group, "")
	plural, ok := strings.CutSuffix(seg, suffix)
	if !ok || plural == "" || strings.Contains(plural, ".") {
		return false
	}
	if suffix != "" {
		return true // plural.group: any plural of that group, irregular ones too
	}
	guess, _ := meta.UnsafeGuessKindToResource(gvk)
	return plural == guess.Resource || strings.HasPrefix(plural, strings.ToLower(gvk.Kind))
}

// segmentOfKind is the key segment of obj's kind as the target cluster
// serves it, or "" when there is no target or it does not know the kind
// (CheckKey then compares groups).
func (r *restorer) segmentOfKind(obj *unstructured.Unstructured) string {
	if r.target.Mapper == nil {
		return ""
	}
	m, err := r.mapping(obj)
	if err != nil {
		return ""
	}
	return object.Segment(m.Resource.Group, m.Resource.Resource)
}

// Selected reports whether the selection's label selector takes obj. A
// Namespace the selection restores objects into is always taken, whatever
// its labels: without it, nothing in it could be restored.
func Selected(obj *unstructured.Unstructured, selector labels.Selector, namespaces map[string]bool) bool {
	if selector == nil || selector.Matches(labels.Set(obj.GetLabels())) {
		return true
	}
	return is(obj, "", "Namespace") && namespaces[obj.GetName()]
}

// Reclaimed makes a PersistentVolume whose reclaim policy is Delete,
// written by another cluster than the target, Retain, and says so; ""
// when it changed nothing. Otherwise deleting a claim in the new cluster
// would delete the old cluster's disk.
func Reclaimed(obj *unstructured.Unstructured, writtenBy, target string, keep bool) string {
	if keep || !is(obj, "", "PersistentVolume") || (writtenBy != "" && writtenBy == target) {
		return ""
	}
	if policy, _, _ := unstructured.NestedString(obj.Object, "spec", "persistentVolumeReclaimPolicy"); policy != "Delete" {
		return ""
	}
	_ = unstructured.SetNestedField(obj.Object, "Retain", "spec", "persistentVolumeReclaimPolicy")
	return "reclaim policy Delete restored as Retain: another cluster wrote it (--keep-reclaim-policy keeps Delete)"
}

// PruneReason says why a live object the backup does not hold is pruned,
// or "" when it must not be: it is outside the selection, the control
// plane or a controller maintains it, or the service's rules would not
// have stored it (so the backup not holding it says nothing).
func PruneReason(live *unstructured.Unstructured, selector labels.Selector, stored func(*unstructured.Unstructured) bool) string {
	if len(live.GetOwnerReferences()) > 0 || (is(live, "", "ServiceAccount") && live.GetName() == "default") {
		return ""
	}
	if _, ok := controlPlaneRule(live); ok {
		return ""
	}
	if selector != nil && !selector.Matches(labels.Set(live.GetLabels())) {
		return ""
	}
	if stored != nil && !stored(live) {
		return ""
	}
	reason := "not in the backup, which holds its type and namespace"
	if selector != nil && !selector.Empty() {
		reason += "; matches -l " + selector.String()
	}
	if stored != nil {
		reason += "; the service's rules would have stored it"
	}
	return reason
}

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

// segmentKey names an owner of a built-in kind as its item would.
func segmentKey(k ownerKey) string {
	return segmentOf(k.group, k.kind) + "/" + k.namespace + "/" + k.name
}
