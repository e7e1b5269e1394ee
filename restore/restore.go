package restore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/object"
)

// FieldManager is the server-side apply field manager of a restore.
const FieldManager = "cluster-backup"

// How a restore treats an object that exists in the cluster (--existing).
const (
	ExistingApply   = "apply"   // server-side apply: the backup's fields win, others stay
	ExistingSkip    = "skip"    // leave it as it is
	ExistingReplace = "replace" // make it equal to the backup: fields added since are removed
)

// Dry runs (--dry-run).
const (
	DryRunClient = "client" // decide what would be done; send nothing
	DryRunServer = "server" // send every write as a server-side dry run
)

// Outcomes of one object.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
	Skipped    = "skipped"
	Failed     = "failed"
	Pruned     = "pruned"
	// Unknown: the store cannot say what the object was at the chosen
	// time (see Item.Unknown); it is neither restored nor pruned.
	Unknown = "unknown"
)

// Options configure a restore.
type Options struct {
	Existing          string
	Prune             bool
	DryRun            string
	Parallel          int
	PreserveNodePorts bool
	NamespaceMapping  map[string]string
	Selector          labels.Selector // over the backed-up objects' labels; nil selects all
	// Progress, when set, is called with each object's result as it is
	// decided.
	Progress func(Result)
	// Concurrency, when set, is called with the number of writes allowed
	// in flight each time the API server's answers change it.
	Concurrency func(limit int)
	// Decrypter decrypts the values of Secrets stored encrypted; without
	// it such Secrets fail and everything else goes on.
	Decrypter *encrypt.Decrypter
	// IncludeControlPlane writes what a control plane makes and maintains
	// for itself (ControlPlaneRules), which is otherwise left alone.
	IncludeControlPlane bool
	// ClusterUID is the target cluster's identity (its kube-system UID):
	// a PersistentVolume another cluster wrote is restored with reclaim
	// policy Retain, unless KeepReclaimPolicy.
	ClusterUID        string
	KeepReclaimPolicy bool
	// Waves are the user's order rules (--priorities): the wave of each
	// listed resource segment, over the default order.
	Waves map[string]Wave
	// Stored, when set, says whether the service's rules would have stored
	// a live object: prune deletes nothing else, since the backup not
	// holding an object the rules leave out says nothing about it.
	Stored func(*unstructured.Unstructured) bool
}

// Result is what a restore did with one object.
type Result struct {
	Key         string    `json:"key,omitempty"`
	Resource    string    `json:"resource"`
	Namespace   string    `json:"namespace,omitempty"`
	Name        string    `json:"name"`
	Outcome     string    `json:"outcome"`
	Reason      string    `json:"reason,omitempty"`
	VersionID   string    `json:"versionId,omitempty"`
	VersionTime time.Time `json:"versionTime,omitzero"`
}

// Target is the cluster a restore writes to.
type Target struct {
	Dynamic dynamic.Interface
	// Metadata, when set, carries the server-side applies: the API server
	// answers them with the object's metadata only, which costs both
	// sides less than the whole object the dynamic client asks for.
	Metadata metadata.Interface
	Mapper   meta.ResettableRESTMapper
}

// ClusterUID is the target cluster's identity: the UID of its kube-system
// namespace, as the service records it with every document it writes.
func (t Target) ClusterUID(ctx context.Context) (string, error) {
	ns, err := t.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(ns.GetUID()), nil
}

// planned is one object on its way into the cluster.
type planned struct {
	Fetched
	obj   *unstructured.Unstructured
	owner ownerKey
	depth int // owners in the restore come first
	// implied: a Namespace the backup does not hold (the filters left
	// Namespace objects out), created for the objects restored into it.
	implied bool
	// note is said in the report of a written object (what was changed
	// for the target cluster).
	note string
}

// restorer is one run.
type restorer struct {
	target Target
	opts   Options

	mu      sync.Mutex
	results []Result
	uids    map[ownerKey]types.UID                            // what the owners restored so far got
	live    map[liveKey]map[string]*unstructured.Unstructured // one LIST per type and namespace
	listErr map[liveKey]error
	gvrs    map[schema.GroupVersionKind]*meta.RESTMapping
	writes  *adaptive // writes in flight, adapted to the API server
	// namespaces are those the selected items lie in, before mapping:
	// their Namespace objects are restored whatever the label selector.
	namespaces map[string]bool
}

type liveKey struct {
	gvr       schema.GroupVersionResource
	namespace string
}

func newRestorer(target Target, opts Options) *restorer {
	r := &restorer{
		target: target, opts: opts,
		uids:    map[ownerKey]types.UID{},
		live:    map[liveKey]map[string]*unstructured.Unstructured{},
		listErr: map[liveKey]error{},
		gvrs:    map[schema.GroupVersionKind]*meta.RESTMapping{},
	}
	if r.opts.Parallel < 1 {
		r.opts.Parallel = 16
	}
	r.writes = newAdaptive(r.opts.Parallel)
	r.writes.changed = r.opts.Concurrency
	if r.opts.Existing == "" {
		r.opts.Existing = ExistingApply
	}
	return r
}

// plan decides every fetched document; what remains is ordered by owner
// depth.
func (r *restorer) plan(fetched []Fetched) []*planned {
	items := make([]Item, len(fetched))
	for i, f := range fetched {
		items[i] = f.Item
	}
	r.selection(items)
	keys := keysOf(items, r.opts.NamespaceMapping)
	restored := func(k ownerKey) bool { return keys[segmentKey(k)] }
	var plan []*planned
	for i := range fetched {
		p := r.decide(fetched[i], restored)
		fetched[i].Body = nil // decided: the bytes can be collected
		if p != nil {
			plan = append(plan, p)
		}
	}
	plan = append(plan, impliedFromKeys(items, r.opts.NamespaceMapping)...)
	inSet := map[ownerKey]*planned{}
	for _, p := range plan {
		inSet[p.owner] = p
	}
	for _, p := range plan {
		p.depth = depth(p, inSet, 0)
	}
	return plan
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

func resultOf(it Item, obj *unstructured.Unstructured) Result {
	res := Result{Key: it.Version.Key, Resource: it.Segment, Namespace: it.Namespace, Name: it.Name, VersionID: it.Version.ID, VersionTime: it.Version.Time}
	if obj != nil {
		res.Namespace, res.Name = obj.GetNamespace(), obj.GetName()
	}
	return res
}

func (r *restorer) report(res Result, outcome, reason string) {
	res.Outcome, res.Reason = outcome, reason
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
	if r.opts.Progress != nil {
		r.opts.Progress(res)
	}
}

// applyAll applies a group of objects with no order among them, Parallel
// at a time.
func (r *restorer) applyAll(ctx context.Context, group []*planned) {
	next := make(chan *planned)
	var wg sync.WaitGroup
	for range r.opts.Parallel {
		wg.Go(func() {
			for p := range next {
				outcome, reason := r.apply(ctx, p)
				r.report(resultOf(p.Item, p.obj), outcome, reason)
			}
		})
	}
	for _, p := range group {
		next <- p
	}
	close(next)
	wg.Wait()
}

// mapping finds the resource of obj's kind, asking discovery again once if
// it is not known (a CRD applied in this restore).
func (r *restorer) mapping(obj *unstructured.Unstructured) (*meta.RESTMapping, error) {
	gvk := obj.GroupVersionKind()
	r.mu.Lock()
	m, ok := r.gvrs[gvk]
	r.mu.Unlock()
	if ok {
		return m, nil
	}
	m, err := r.target.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.gvrs[gvk] = m
	r.mu.Unlock()
	return m, nil
}

func (r *restorer) resource(m *meta.RESTMapping, namespace string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return r.target.Dynamic.Resource(m.Resource).Namespace(namespace)
	}
	return r.target.Dynamic.Resource(m.Resource)
}

// liveObject returns the live object of the same name, from one LIST of its
// type in its namespace made the first time it is asked for.
func (r *restorer) liveObject(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	ns := obj.GetNamespace()
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		ns = ""
	}
	k := liveKey{gvr: m.Resource, namespace: ns}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err, failed := r.listErr[k]; failed {
		return nil, err
	}
	objs, listed := r.live[k]
	if !listed {
		list, err := r.resource(m, ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil && !apierrors.IsNotFound(err) {
			r.listErr[k] = err
			return nil, err
		}
		objs = map[string]*unstructured.Unstructured{}
		if list != nil {
			for i := range list.Items {
				// A copy of each item, so that one forgotten (forgetLive)
				// is not kept by the list's array.
				obj := list.Items[i]
				objs[obj.GetName()] = &obj
			}
		}
		r.live[k] = objs
	}
	return objs[obj.GetName()], nil
}

// forgetLive drops the live object of obj's name from the listed ones,
// once it has been compared and is needed no more.
func (r *restorer) forgetLive(m *meta.RESTMapping, obj *unstructured.Unstructured) {
	ns := obj.GetNamespace()
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		ns = ""
	}
	r.mu.Lock()
	delete(r.live[liveKey{gvr: m.Resource, namespace: ns}], obj.GetName())
	r.mu.Unlock()
}

// ownerRefs points obj's owner references at the owners' new UIDs and
// drops those whose owner is not restored.
func (r *restorer) ownerRefs(obj *unstructured.Unstructured) {
	refs := obj.GetOwnerReferences()
	if len(refs) == 0 {
		return
	}
	kept := refs[:0]
	r.mu.Lock()
	for _, ref := range refs {
		if uid, ok := r.uids[refKey(obj, ref.APIVersion, ref.Kind, ref.Name)]; ok {
			ref.UID = uid
			kept = append(kept, ref)
		}
	}
	r.mu.Unlock()
	if len(kept) == 0 {
		kept = nil
	}
	obj.SetOwnerReferences(kept)
}

// apply writes one object and says what it did.
func (r *restorer) apply(ctx context.Context, p *planned) (outcome, reason string) {
	obj := p.obj
	r.ownerRefs(obj)
	m, err := r.mapping(obj)
	if err != nil {
		return Failed, err.Error()
	}
	live, err := r.liveObject(ctx, m, obj)
	if err != nil {
		return Failed, "cannot list the live objects: " + err.Error()
	}
	if live != nil {
		r.remember(p.owner, live.GetUID())
		if p.implied {
			return Unchanged, ""
		}
		if rule, ok := controlPlaneRule(obj); ok && rule.AbsentOnly && !r.opts.IncludeControlPlane {
			return Skipped, rule.Reason
		}
		if r.opts.Existing == ExistingSkip {
			return Skipped, "exists in the cluster (--existing skip)"
		}
		same, err := equal(obj, live, r.opts.PreserveNodePorts)
		if err != nil {
			return Failed, err.Error()
		}
		if same {
			return Unchanged, ""
		}
	}
	outcome = Created
	if live != nil {
		outcome = Configured
	}
	if r.opts.DryRun == DryRunClient {
		return outcome, "dry run"
	}
	var dryRun []string
	if r.opts.DryRun == DryRunServer {
		dryRun = []string{metav1.DryRunAll}
	}
	var uid types.UID
	if !r.writes.acquire(ctx) {
		return Failed, ctx.Err().Error()
	}
	start := time.Now()
	defer func() { r.writes.release(time.Since(start), err) }()
	if live != nil {
		// Both an apply and a replace would otherwise send the backup's
		// allocations over the live ones (a volume's claimRef is atomic:
		// applied without its uid, it replaces the live binding).
		keepAllocated(obj, live)
	}
	if live != nil && r.opts.Existing == ExistingReplace {
		obj.SetResourceVersion(live.GetResourceVersion())
		var out *unstructured.Unstructured
		if out, err = r.resource(m, obj.GetNamespace()).Update(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRun}); err == nil {
			uid = out.GetUID()
		}
	} else {
		uid, err = r.serverSideApply(ctx, m, obj, dryRun)
	}
	if err != nil {
		return Failed, err.Error()
	}
	if r.opts.DryRun == "" {
		r.remember(p.owner, uid)
	}
	if p.implied {
		return outcome, "its Namespace object is not in the backup: created for the objects restored into it"
	}
	return outcome, p.note
}

// serverSideApply applies obj, forced, as FieldManager, and returns the
// UID the object has. The patch is sent as JSON, which the API server reads
// as the YAML apply patches are: the dynamic client's Apply would convert
// it to YAML first, which costs more than the rest of the request on the
// client's side. With a metadata client the answer is the object's
// metadata only (an API that cannot serve that answers with the whole
// object, which the metadata client reads as well).
func (r *restorer) serverSideApply(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured, dryRun []string) (types.UID, error) {
	data, err := obj.MarshalJSON()
	if err != nil {
		return "", err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force, DryRun: dryRun}
	if r.target.Metadata != nil {
		res := r.target.Metadata.Resource(m.Resource)
		var partial *metav1.PartialObjectMetadata
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			partial, err = res.Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
		} else {
			partial, err = res.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
		}
		if err != nil {
			return "", err
		}
		return partial.UID, nil
	}
	out, err := r.resource(m, obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
	if err != nil {
		return "", err
	}
	return out.GetUID(), nil
}

func (r *restorer) remember(k ownerKey, uid types.UID) {
	r.mu.Lock()
	r.uids[k] = uid
	r.mu.Unlock()
}

// equal reports whether the live object already is what the backup holds.
func equal(backup, live *unstructured.Unstructured, preserveNodePorts bool) (bool, error) {
	a, err := Comparable(backup, preserveNodePorts)
	if err != nil {
		return false, err
	}
	b, err := Comparable(live, preserveNodePorts)
	if err != nil {
		return false, err
	}
	return string(a) == string(b), nil
}

// keepAllocated copies into obj what the cluster allocated to the live
// object and will not let a replace change: a Service's cluster IPs, a
// claim's volume, a volume's claim, a Job's selector and the labels it
// matches.
func keepAllocated(obj, live *unstructured.Unstructured) {
	copyField := func(path ...string) {
		if v, found, _ := unstructured.NestedFieldCopy(live.Object, path...); found {
			_ = unstructured.SetNestedField(obj.Object, v, path...)
		}
	}
	switch obj.GroupVersionKind().GroupKind() {
	case schema.GroupKind{Kind: "Service"}:
		copyField("spec", "clusterIP")
		copyField("spec", "clusterIPs")
	case schema.GroupKind{Kind: "PersistentVolumeClaim"}:
		copyField("spec", "volumeName")
	case schema.GroupKind{Kind: "PersistentVolume"}:
		// The binding with its uid: without it the volume controller takes
		// the volume for pre-bound and the bound claim goes Lost.
		copyField("spec", "claimRef")
	case schema.GroupKind{Group: "batch", Kind: "Job"}:
		copyField("spec", "selector")
		liveLabels, _, _ := unstructured.NestedStringMap(live.Object, "spec", "template", "metadata", "labels")
		labels, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "template", "metadata", "labels")
		if labels == nil {
			labels = map[string]string{}
		}
		for _, l := range []string{"controller-uid", "batch.kubernetes.io/controller-uid"} {
			if v, ok := liveLabels[l]; ok {
				labels[l] = v
			}
		}
		_ = unstructured.SetNestedStringMap(obj.Object, labels, "spec", "template", "metadata", "labels")
	}
}

// awaitTerminatingNamespaces waits until the namespaces about to be
// restored that are still being deleted are gone (at most two minutes).
func (r *restorer) awaitTerminatingNamespaces(ctx context.Context, names []string) {
	if r.opts.DryRun != "" {
		return
	}
	nsRes := r.target.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	list, err := nsRes.List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	terminating := map[string]bool{}
	for _, ns := range list.Items {
		if ns.GetDeletionTimestamp() != nil {
			terminating[ns.GetName()] = true
		}
	}
	for _, name := range names {
		if !terminating[name] {
			continue
		}
		_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := nsRes.Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	}
}

// awaitCRDs waits until every restored CRD is Established, so that its
// custom resources can be applied.
func (r *restorer) awaitCRDs(ctx context.Context, ps []*planned) {
	if r.opts.DryRun != "" {
		return
	}
	crds := r.target.Dynamic.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, p := range ps {
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			crd, err := crds.Get(ctx, p.obj.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
	}
}

// extra is a live object the backup does not hold, and why a prune
// deletes it.
type extra struct {
	obj    *unstructured.Unstructured
	gvr    schema.GroupVersionResource
	reason string
}

// extras are the live namespaced objects, of the types and namespaces the
// restore listed, that the backup does not hold and PruneReason finds
// eligible: in the selection, and what the service's rules would have
// stored.
func (r *restorer) extras(plan []*planned, held map[string]bool) []extra {
	wanted := map[ownerKey]bool{}
	for _, p := range plan {
		wanted[ownerKeyOf(p.obj)] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []extra
	for k, objs := range r.live {
		if k.namespace == "" {
			continue
		}
		segment := object.Segment(k.gvr.Group, k.gvr.Resource)
		for _, o := range objs {
			// What the backup holds is never an extra, even when it could
			// not be read, decrypted or written.
			if wanted[ownerKeyOf(o)] || held[segment+"/"+o.GetNamespace()+"/"+o.GetName()] {
				continue
			}
			if reason := PruneReason(o, r.opts.Selector, r.opts.Stored); reason != "" {
				out = append(out, extra{obj: o, gvr: k.gvr, reason: reason})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.gvr.Resource+"/"+a.obj.GetNamespace()+"/"+a.obj.GetName() < b.gvr.Resource+"/"+b.obj.GetNamespace()+"/"+b.obj.GetName()
	})
	return out
}

// prune deletes the extras: live objects the backup does not hold.
func (r *restorer) prune(ctx context.Context, plan []*planned, held map[string]bool) {
	for _, e := range r.extras(plan, held) {
		o := e.obj
		res := Result{Resource: e.gvr.Resource, Namespace: o.GetNamespace(), Name: o.GetName()}
		if r.opts.DryRun == DryRunClient {
			r.report(res, Pruned, "dry run: "+e.reason)
			continue
		}
		var dryRun []string
		if r.opts.DryRun == DryRunServer {
			dryRun = []string{metav1.DryRunAll}
		}
		err := r.target.Dynamic.Resource(e.gvr).Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{DryRun: dryRun})
		if err != nil && !apierrors.IsNotFound(err) {
			r.report(res, Failed, "prune: "+err.Error())
			continue
		}
		r.report(res, Pruned, e.reason)
	}
}

// Counts tallies results by outcome.
func Counts(results []Result) map[string]int {
	out := map[string]int{}
	for _, res := range results {
		out[res.Outcome]++
	}
	return out
}

// ErrPartial is returned when some objects failed.
var ErrPartial = errors.New("some objects were not restored")

// Summary is one line of counts.
func Summary(results []Result, took time.Duration) string {
	c := Counts(results)
	unknown := ""
	if c[Unknown] > 0 {
		unknown = fmt.Sprintf(", %d unknown", c[Unknown])
	}
	return fmt.Sprintf("%d created, %d configured, %d unchanged, %d skipped, %d pruned, %d failed%s in %s",
		c[Created], c[Configured], c[Unchanged], c[Skipped], c[Pruned], c[Failed], unknown, took.Round(time.Millisecond))
}
