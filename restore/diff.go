package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/encrypt"
)

// Changes between the backup and the other side.
const (
	Added   = "+" // in the backup, not on the other side: a restore creates it
	Removed = "-" // on the other side, not in the backup: a prune deletes it
	Changed = "~" // on both, different
)

// Difference is one object that differs. Before is the other side (the
// live object, or the backup at the other time), After the backup as a
// restore would write it; both are compared forms, Secret values masked.
type Difference struct {
	Change    string `json:"change"`
	Resource  string `json:"resource"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Before    string `json:"-"`
	After     string `json:"-"`
}

// Details is the unified diff of the two sides.
func (d Difference) Details() string {
	path := d.Resource + "/" + d.Name
	if d.Namespace != "" {
		path = d.Namespace + "/" + path
	}
	out, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(d.Before), B: difflib.SplitLines(d.After),
		FromFile: "live/" + path, ToFile: "backup/" + path, Context: 3,
	})
	return out
}

// DiffLive compares the backup's items with the live cluster, as a restore
// with opts would see it: one LIST per type and namespace, no GET, and the
// live side cleaned and sanitised like the backup. The backup is read from
// reader a type and namespace at a time, parallel objects at once, and
// each pair compared is let go (only its identity is kept, for the
// extras), so that the backup is never held whole.
// Objects that could not be read or listed come back as failed results.
func DiffLive(ctx context.Context, target Target, reader Reader, items []Item, parallel int, opts Options) ([]Difference, []Result) {
	r := newRestorer(target, opts)
	r.selection(items)
	keys := keysOf(items, opts.NamespaceMapping)
	// Objects that --namespace-mapping lands on the same name all compare
	// with the one live object: it is kept for each of them.
	targets := map[string]int{}
	for k := range keysOf(items, nil) {
		targets[mappedKey(k, opts.NamespaceMapping)]++
	}
	var mu sync.Mutex
	var diffs []Difference
	compared := map[ownerKey]bool{}
	compare := func(p *planned) {
		forget := targets[p.Segment+"/"+p.obj.GetNamespace()+"/"+p.obj.GetName()] <= 1
		d, differs := r.diffLive(ctx, p, forget)
		mu.Lock()
		defer mu.Unlock()
		if differs {
			diffs = append(diffs, d)
		}
		compared[p.owner] = true
	}
	// Each object is read, decided and compared by one worker and let go:
	// a folder's live objects, listed once, are all that is held.
	for _, folder := range folders(items) {
		next := make(chan Item)
		var workers sync.WaitGroup
		for range max(1, parallel) {
			workers.Go(func() {
				for it := range next {
					if p := r.prepare(ctx, reader, it, keys); p != nil {
						compare(p)
					}
					if opts.Tick != nil {
						opts.Tick()
					}
				}
			})
		}
		for _, it := range folder {
			next <- it
		}
		close(next)
		workers.Wait()
	}
	for _, p := range impliedFromKeys(items, opts.NamespaceMapping) {
		compare(p)
	}
	for _, e := range r.extras(compared, keys) {
		res := Result{Resource: e.gvr.Resource, Namespace: e.obj.GetNamespace(), Name: e.obj.GetName()}
		diffs = append(diffs, difference(Removed, res, e.obj, nil, opts.PreserveNodePorts))
	}
	sortDiffs(diffs)
	return diffs, r.failed()
}

// mappedKey is a segment/namespace/name key of keysOf with the Namespace
// object's own name mapped too.
func mappedKey(k string, mapping map[string]string) string {
	seg, rest, _ := strings.Cut(k, "/")
	ns, name, _ := strings.Cut(rest, "/")
	if to, ok := mapping[ns]; ok && ns != "" {
		ns = to
	}
	if to, ok := mapping[name]; ok && seg == "namespaces" && ns == "" {
		name = to
	}
	return seg + "/" + ns + "/" + name
}

// diffLive compares one planned object with its live copy, which it lets
// go afterwards when forget; ok is false when they are equal (or the live
// side could not be listed, reported).
func (r *restorer) diffLive(ctx context.Context, p *planned, forget bool) (d Difference, ok bool) {
	res := resultOf(p.Item, p.obj)
	preserve := r.opts.PreserveNodePorts
	m, err := r.mapping(p.obj)
	if err != nil {
		return difference(Added, res, nil, p.obj, preserve), true
	}
	live, err := r.liveObject(ctx, m, p.obj)
	if err != nil {
		r.report(res, Failed, "cannot list the live objects: "+err.Error())
		return d, false
	}
	if live == nil {
		return difference(Added, res, nil, p.obj, preserve), true
	}
	if forget {
		defer r.forgetLive(m, p.obj)
	}
	if p.implied {
		return d, false // only its existence matters
	}
	if rule, ok := controlPlaneRule(p.obj); ok && rule.AbsentOnly && !r.opts.IncludeControlPlane {
		return d, false // a restore leaves the live one alone
	}
	if same, err := equal(p.obj, live, preserve); err != nil || !same {
		return difference(Changed, res, live, p.obj, preserve), true
	}
	return d, false
}

// DiffBackups compares the backup at one time (after) with the backup at
// another (before), objects matched by key, reading both from reader a
// type and namespace at a time.
func DiffBackups(ctx context.Context, reader Reader, before, after []Item, parallel int, opts Options) ([]Difference, []Result) {
	rb, ra := newRestorer(Target{}, opts), newRestorer(Target{}, opts)
	rb.selection(before)
	ra.selection(after)
	restoredBefore, restoredAfter := restoredBy(before, opts.NamespaceMapping), restoredBy(after, opts.NamespaceMapping)
	byFolder := map[string][2][]Item{}
	var order []string
	for side, items := range [][]Item{before, after} {
		for _, f := range folders(items) {
			k := f[0].Segment + "/" + f[0].Namespace
			pair, seen := byFolder[k]
			if !seen {
				order = append(order, k)
			}
			pair[side] = f
			byFolder[k] = pair
		}
	}
	var diffs []Difference
	for _, k := range order {
		pair := byFolder[k]
		// What either side cannot tell is not compared.
		unknown := map[string]bool{}
		for _, it := range append(append([]Item{}, pair[0]...), pair[1]...) {
			if it.Unknown {
				unknown[it.Version.Key] = true
			}
		}
		old := map[string]*planned{}
		for _, p := range rb.plan(Fetch(ctx, reader, pair[0], parallel), restoredBefore) {
			if !unknown[p.Version.Key] {
				old[p.Version.Key] = p
			}
		}
		for _, p := range ra.plan(Fetch(ctx, reader, pair[1], parallel), restoredAfter) {
			if unknown[p.Version.Key] {
				continue
			}
			res := resultOf(p.Item, p.obj)
			o, ok := old[p.Version.Key]
			delete(old, p.Version.Key)
			switch {
			case !ok:
				diffs = append(diffs, difference(Added, res, nil, p.obj, opts.PreserveNodePorts))
			case o.Version.ID != p.Version.ID:
				if same, err := equal(p.obj, o.obj, opts.PreserveNodePorts); err != nil || !same {
					diffs = append(diffs, difference(Changed, res, o.obj, p.obj, opts.PreserveNodePorts))
				}
			}
		}
		for _, o := range old {
			diffs = append(diffs, difference(Removed, resultOf(o.Item, o.obj), o.obj, nil, opts.PreserveNodePorts))
		}
	}
	failed := append(rb.failed(), ra.failed()...)
	sortDiffs(diffs)
	return diffs, failed
}

func (r *restorer) failed() []Result {
	var out []Result
	for _, res := range r.results {
		if res.Outcome == Failed {
			out = append(out, res)
		}
	}
	return out
}

func sortDiffs(diffs []Difference) {
	sort.Slice(diffs, func(i, j int) bool {
		a, b := diffs[i], diffs[j]
		return a.Resource+"/"+a.Namespace+"/"+a.Name < b.Resource+"/"+b.Namespace+"/"+b.Name
	})
}

func difference(change string, res Result, before, after *unstructured.Unstructured, preserveNodePorts bool) Difference {
	d := Difference{Change: change, Resource: res.Resource, Namespace: res.Namespace, Name: res.Name}
	switch {
	case before != nil:
		MaskSecrets(before, after)
	case after != nil:
		MaskSecrets(after, nil)
	}
	d.Before, d.After = render(before, preserveNodePorts), render(after, preserveNodePorts)
	return d
}

// render is the compared form of obj as YAML.
func render(obj *unstructured.Unstructured, preserveNodePorts bool) string {
	if obj == nil {
		return ""
	}
	b, err := Comparable(obj, preserveNodePorts)
	if err != nil {
		return err.Error()
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err.Error()
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// MaskedTexts are two stored documents as a person may see them (older
// may be nil, for a first version): as stored, unless they are a Secret,
// whose values are then masked as MaskSecrets masks them and which are
// written out again as the service writes documents. A document that does
// not parse is left as it is, unless it says it is a Secret: then it is
// withheld.
func MaskedTexts(older, newer []byte) (string, string) {
	if !bytes.Contains(older, []byte("Secret")) && !bytes.Contains(newer, []byte("Secret")) {
		return string(older), string(newer)
	}
	decode := func(body []byte) (*unstructured.Unstructured, bool) {
		if len(body) == 0 {
			return nil, true
		}
		obj, err := Decode(body)
		return obj, err == nil
	}
	oo, okOld := decode(older)
	no, okNew := decode(newer)
	MaskSecrets(oo, no)
	text := func(obj *unstructured.Unstructured, ok bool, raw []byte) string {
		switch {
		case !ok && bytes.Contains(raw, []byte("kind: Secret")):
			return "# a Secret that does not parse: withheld\n"
		case !ok:
			return string(raw)
		case obj == nil:
			return ""
		}
		enc, err := encode.Options{IncludeManagedFields: true, IncludeStatus: true}.Encode(obj)
		if err != nil {
			return "# cannot be shown: " + err.Error() + "\n"
		}
		return string(enc.Body)
	}
	return text(oo, okOld, older), text(no, okNew, newer)
}

// MaskSecrets masks the values of two versions of a Secret (see
// maskSecrets); objects of any other kind are left as they are. b may be
// nil.
func MaskSecrets(a, b *unstructured.Unstructured) {
	if a == nil {
		a, b = b, nil
	}
	if a != nil && a.GetKind() == "Secret" {
		maskSecrets(a, b)
	} else if b != nil && b.GetKind() == "Secret" {
		maskSecrets(b, nil)
	}
}

// maskSecrets replaces the values of a Secret's data and stringData and
// its last-applied-configuration annotation (kubectl apply's second copy
// of them), as kubectl diff does: "***" where both sides agree, "***
// (before)" and "*** (after)" where they differ. a and b are masked in
// place (b may be nil).
func maskSecrets(a, b *unstructured.Unstructured) {
	for _, field := range [][]string{{"data"}, {"stringData"}, {"metadata", "annotations"}} {
		av, _, _ := unstructured.NestedMap(a.Object, field...)
		var bv map[string]any
		if b != nil {
			bv, _, _ = unstructured.NestedMap(b.Object, field...)
		}
		secret := func(k string) bool { return field[0] != "metadata" || k == encrypt.LastApplied }
		for k, v := range av {
			if !secret(k) {
				continue
			}
			if bv != nil {
				if w, ok := bv[k]; ok && w != v {
					av[k], bv[k] = "*** (before)", "*** (after)"
					continue
				}
			}
			av[k] = "***"
		}
		for k := range bv {
			if !secret(k) {
				continue
			}
			if _, ok := av[k]; !ok || av[k] == "***" {
				bv[k] = "***"
			}
		}
		if av != nil {
			_ = unstructured.SetNestedMap(a.Object, av, field...)
		}
		if bv != nil {
			_ = unstructured.SetNestedMap(b.Object, bv, field...)
		}
	}
}
