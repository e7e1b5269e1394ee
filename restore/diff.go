package restore

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

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

// DiffLive compares the backup with the live cluster, as a restore with
// opts would see it: one LIST per type and namespace, no GET, and the live
// side cleaned and sanitised like the backup. Objects that could not be
// read or listed come back as failed results. Each pair compared is let go
// (only its identity is kept, for the extras), so that both sides of every
// object are never held at once.
func DiffLive(ctx context.Context, target Target, fetched []Fetched, opts Options) ([]Difference, []Result) {
	r := newRestorer(target, opts)
	plan := r.plan(fetched)
	// Objects that --namespace-mapping lands on the same name all compare
	// with the one live object: it is kept for each of them.
	targets := map[ownerKey]int{}
	for _, p := range plan {
		targets[p.owner]++
	}
	var diffs []Difference
	for _, p := range plan {
		if d, ok := r.diffLive(ctx, p, targets[p.owner] == 1); ok {
			diffs = append(diffs, d)
		}
		p.obj = skeleton(p.obj)
	}
	items := make([]Item, len(fetched))
	for i, f := range fetched {
		items[i] = f.Item
	}
	for _, e := range r.extras(plan, keysOf(items, opts.NamespaceMapping)) {
		res := Result{Resource: e.gvr.Resource, Namespace: e.obj.GetNamespace(), Name: e.obj.GetName()}
		diffs = append(diffs, difference(Removed, res, e.obj, nil, opts.PreserveNodePorts))
	}
	var failed []Result
	for _, res := range r.results {
		if res.Outcome == Failed {
			failed = append(failed, res)
		}
	}
	sortDiffs(diffs)
	return diffs, failed
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
// another (before), objects matched by key.
func DiffBackups(before, after []Fetched, opts Options) ([]Difference, []Result) {
	rb, ra := newRestorer(Target{}, opts), newRestorer(Target{}, opts)
	// What either side cannot tell is not compared.
	unknown := map[string]bool{}
	for _, f := range append(append([]Fetched{}, before...), after...) {
		if f.Unknown {
			unknown[f.Version.Key] = true
		}
	}
	pb, pa := rb.plan(before), ra.plan(after)
	old := map[string]*planned{}
	for _, p := range pb {
		if !p.implied && !unknown[p.Version.Key] {
			old[p.Version.Key] = p
		}
	}
	var diffs []Difference
	for _, p := range pa {
		if p.implied || unknown[p.Version.Key] {
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

// MaskSecrets masks the values of two versions of a Secret (see
// maskSecrets); objects of any other kind are left as they are. b may be
// nil.
func MaskSecrets(a, b *unstructured.Unstructured) {
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
