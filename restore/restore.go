package restore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

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
	// Modifiers patch each selected object before it is mapped, checked
	// and written (restore --resource-modifiers), as Velero's do.
	Modifiers *Modifiers
	Selector  labels.Selector // over the backed-up objects' labels; nil selects all
	// Progress, when set, is called with each object's result as it is
	// decided.
	Progress func(Result)
	// Tick, when set, is called once for each backed-up object diff has
	// compared: a count for a progress bar.
	Tick func()
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
	// Lists, when set (wire.NewClient), reads the live objects of a type
	// in a namespace item by item (wire.List), each kept without its
	// managedFields, where the dynamic client would hold the whole
	// response, its decoded tree and the objects at once.
	Lists  rest.Interface
	Mapper meta.ResettableRESTMapper
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
		wanted := make(map[ownerKey]bool, len(all))
		for _, p := range all {
			wanted[p.owner] = true
		}
		rs.prune(ctx, wanted, keys)
	}
	sort.SliceStable(rs.results, func(i, j int) bool { return rs.results[i].Key < rs.results[j].Key })
	return rs.results
}

// stream reads the items of one wave and writes those without owner
// references as they come; it returns what it wrote and what waits for the
// end of the wave.
func (r *restorer) stream(ctx context.Context, reader Reader, items []Item, extra []*planned, keys map[string]bool) (done, deferred []*planned) {
	var mu sync.Mutex
	apply, applied := r.appliers(ctx)
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
	applied()
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
