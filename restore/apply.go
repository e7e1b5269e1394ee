package restore

import (
	"context"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/wire"
)

// This file is the executor of a restore: it reads the live objects a
// decision needs, writes what was decided (server-side apply, or an update
// for --existing replace), adapts the writes in flight to the API server,
// and prunes.

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
	next, wait := r.appliers(ctx)
	for _, p := range group {
		next <- p
	}
	wait()
}

// appliers starts Parallel workers that apply and report each object sent
// to next; wait closes next and waits for them. A written object keeps
// only its identity from then on (owner lookups and prune need no more),
// so that its document can be collected.
func (r *restorer) appliers(ctx context.Context) (next chan<- *planned, wait func()) {
	ch := make(chan *planned)
	var wg sync.WaitGroup
	for range r.opts.Parallel {
		wg.Go(func() {
			for p := range ch {
				outcome, reason := r.apply(ctx, p)
				r.report(resultOf(p.Item, p.obj), outcome, reason)
				p.obj = skeleton(p.obj)
			}
		})
	}
	return ch, func() {
		close(ch)
		wg.Wait()
	}
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
		var err error
		if objs, err = r.list(ctx, m, ns); err != nil {
			r.listErr[k] = err
			return nil, err
		}
		r.live[k] = objs
	}
	return objs[obj.GetName()], nil
}

// list reads the live objects of m's type in ns by name, in one LIST.
func (r *restorer) list(ctx context.Context, m *meta.RESTMapping, ns string) (map[string]*unstructured.Unstructured, error) {
	objs := map[string]*unstructured.Unstructured{}
	opts := metav1.ListOptions{ResourceVersion: "0"}
	if r.target.Lists != nil {
		_, err := wire.List(ctx, r.target.Lists, m.Resource, ns, m.GroupVersionKind.Kind, opts, func(obj *unstructured.Unstructured) error {
			unstructured.RemoveNestedField(obj.Object, "metadata", "managedFields") // never read
			objs[obj.GetName()] = obj
			return nil
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		return objs, nil
	}
	list, err := r.resource(m, ns).List(ctx, opts)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if list != nil {
		for i := range list.Items {
			// A copy of each item, so that one forgotten (forgetLive) is
			// not kept by the list's array.
			obj := list.Items[i]
			objs[obj.GetName()] = &obj
		}
	}
	return objs, nil
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
func (r *restorer) extras(wanted map[ownerKey]bool, held map[string]bool) []extra {
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
func (r *restorer) prune(ctx context.Context, wanted map[ownerKey]bool, held map[string]bool) {
	for _, e := range r.extras(wanted, held) {
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

// skeleton is obj's identity without its content.
func skeleton(obj *unstructured.Unstructured) *unstructured.Unstructured {
	s := &unstructured.Unstructured{}
	s.SetAPIVersion(obj.GetAPIVersion())
	s.SetKind(obj.GetKind())
	s.SetNamespace(obj.GetNamespace())
	s.SetName(obj.GetName())
	return s
}
