// Package snapshot is the safety net of the continuous path: a full pass that
// compares the informer caches with the store's listing and repairs the
// differences. It owns the pass in three steps: plan (a pure function of the
// listing and the caches: what to write, what to delete, what to keep
// because its type is not completely listed), the guards that may hold the
// deletes back, and apply and report. Writes go through the debounced
// writer, so a pass never races a watch event on the same key.
package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// Source is the cluster as the informer caches hold it.
type Source interface {
	// Each calls visit for every cached object of every type whose cache
	// is complete, with the SHA-256 of its document; ok is false when the
	// filters leave it out, and err wraps encode.ErrInvalid when it cannot
	// be stored.
	Each(visit func(ref object.Ref, sum string, ok bool, err error))
	// Resolve maps a stored resource segment to its type, and says
	// whether a stored key of it may be deleted when Each did not
	// visit its object: only when its type's cache is complete, or the
	// type is known and left out by the rules. Keys of any other type are
	// kept.
	Resolve(segment string) (gr object.GroupResource, prunable bool)
	// Incomplete names the types (and failing API groups) whose stored
	// keys are kept because their caches are not complete.
	Incomplete() []string
	// Denied names the incomplete types that the service may not list: a
	// choice of its RBAC, reported and never pruned, but no failure of
	// the pass.
	Denied() []string
}

// Lister lists what the store holds, one key at a time (sink.Walker).
type Lister interface {
	Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error
}

// Applier writes or deletes keys now, through the writer's queue.
type Applier interface {
	Apply(ctx context.Context, refs []object.Ref, since uint64) []object.Outcome
}

// Ledger is what the writer knows the store to hold (sink.Ledger).
type Ledger interface {
	// Seq is read before listing the store and passed to Apply, so that
	// keys the writer wrote after the listing are not written twice.
	Seq() uint64
	// Forget drops what the writer knows of a stored key, so that it is
	// written again whatever the caches hold.
	Forget(key string)
	// Known gives the fingerprint of a listed key whose listing carries
	// no metadata, "" when the ledger cannot vouch for it.
	Known(s object.Stored) string
}

// batchesInFlight is how many batches of BATCH_SIZE keys a pass has queued
// in the writer at once.
const batchesInFlight = 16

// Pass is one configured reconcile pass.
type Pass struct {
	Layout    object.Layout
	BatchSize int
	// Settings holds skip-invalid-resources (objects that cannot be
	// stored are skipped rather than errors) and max-prune-fraction (a pass
	// that would delete more than this share of the cluster's stored
	// objects deletes nothing; 1 disables the guard), read at each pass.
	Settings *object.Settings
	// AllowMassPrune accepts, for this pass, deletes beyond
	// MaxPruneFraction (snapshot --allow-mass-prune).
	AllowMassPrune bool
	// Holds, when set, can hold every delete back.
	Holds *object.Holds
	// Identity is the cluster that owns the prefix: stored objects another
	// cluster wrote, one it did not adopt, are never deleted.
	Identity object.Identity
	Source   Source
	Store    Lister
	Writer   Applier
	Ledger   Ledger
	Log      *zap.Logger
	Metrics  *metrics.Metrics
	// Verify, when set, reads back a share of the stored objects in each
	// pass and writes again those altered in the store.
	Verify *Verify
	// Signer, when set, checks the integrity tag of each listed document
	// whose listing carries metadata: one it does not accept (unsigned, or
	// forged by whoever can write the bucket) is written again.
	Signer *object.Signer
	// Progress, when set, is called after each batch with the objects
	// handled so far, the objects to handle and those written.
	Progress func(done, total, written int)
}

// Counts are what a pass did, in total or for one resource.
type Counts struct {
	BackedUp  int
	Unchanged int
	Deleted   int
	Skipped   int
	Invalid   int
	Errors    int
	// Kept are stored objects of types whose caches are not complete, or
	// whose deletes were held back: left as they are.
	Kept int
}

// cannotStore counts an object that cannot be stored, for the reason
// encode.Reason gives: too large is skipped, anything else invalid, and
// either is an error unless skip-invalid-resources is on. The plan and the
// writer's outcomes count through here, so an object is counted the same
// whichever path found it.
func (c *Counts) cannotStore(reason string, skipInvalid bool) {
	if reason == encode.ReasonTooLarge {
		c.Skipped++
	} else {
		c.Invalid++
	}
	if !skipInvalid {
		c.Errors++
	}
}

func (c *Counts) add(o Counts) {
	c.BackedUp += o.BackedUp
	c.Unchanged += o.Unchanged
	c.Deleted += o.Deleted
	c.Skipped += o.Skipped
	c.Invalid += o.Invalid
	c.Errors += o.Errors
	c.Kept += o.Kept
}

// Result counts what a pass did.
type Result struct {
	Counts
	Namespaces int
	// Incomplete names the types whose stored objects were kept because
	// their caches are not complete.
	Incomplete []string
	// Denied are the incomplete types the service may not list.
	Denied []string
	// PruneHeld says why the pass's deletes were held back, if they were.
	PruneHeld string
	Duration  time.Duration
}

// planned is what a pass decides to do before it does anything.
type planned struct {
	writes     []object.Ref
	deletes    []object.Ref
	objects    int // object keys stored under the cluster's prefix
	namespaces int
	counts     map[string]*Counts // by resource segment
	// invalid are the objects that cannot be stored, with why, for the
	// report.
	invalid []invalidObject
}

type invalidObject struct {
	ref object.Ref
	err error
}

func (p *planned) count(resource string) *Counts {
	c := p.counts[resource]
	if c == nil {
		c = &Counts{}
		p.counts[resource] = c
	}
	return c
}

// ownKeys walks the store under prefix and keeps, of each key, only what a
// pass needs: the fingerprint of this cluster's keys in the layout, the
// only keys a pass may write over or delete. Keys another cluster wrote
// and keys outside the layout are not kept, so that however many of them
// the prefix holds, they cost the pass nothing but the listing.
//
// known gives the fingerprint of a key whose listing carries no metadata
// (nil: the metadata's, or none); a key without one is written again, as
// is one whose metadata signer does not accept.
func ownKeys(ctx context.Context, l Lister, prefix string, layout object.Layout, id object.Identity, known func(object.Stored) string, signer *object.Signer) (map[string]string, error) {
	own := map[string]string{}
	err := l.Walk(ctx, prefix, func(s object.Stored) error {
		if _, ok := layout.Parse(s.Key); ok && id.Owns(s.Meta.ClusterUID) {
			fp := s.Meta.Fingerprint()
			switch {
			case fp == "" && known != nil:
				fp = known(s)
			case fp != "" && signer.Check(s.Key, s.Meta) != nil:
				fp = ""
			}
			own[s.Key] = fp
		}
		return nil
	})
	return own, err
}

// plan compares the caches with this cluster's stored keys and their
// fingerprints (ownKeys). It is pure: it decides which keys to write and
// which to delete, and counts the rest. A stored key is deleted only when
// src says its type may be pruned and the caches do not hold its object.
func plan(layout object.Layout, have map[string]string, src Source, skipInvalid bool) *planned {
	p := &planned{counts: map[string]*Counts{}}
	live := map[string]bool{}
	namespaces := map[string]bool{}
	src.Each(func(ref object.Ref, sum string, ok bool, err error) {
		resource := ref.Segment()
		key := layout.Key(ref)
		switch {
		case err != nil:
			p.count(resource).cannotStore(encode.Reason(err), skipInvalid)
			p.invalid = append(p.invalid, invalidObject{ref: ref, err: err})
			live[key] = true // keep the last good version
		case ok:
			live[key] = true
			if ref.Namespace != "" {
				namespaces[ref.Namespace] = true
			}
			if have[key] == sum {
				p.count(resource).Unchanged++
				return
			}
			p.writes = append(p.writes, ref)
		}
	})
	for key := range have {
		k, ok := layout.Parse(key)
		if !ok {
			continue // ownKeys keeps none such
		}
		p.objects++
		if live[key] {
			continue
		}
		gr, prunable := src.Resolve(k.Segment)
		if !prunable {
			p.count(k.Segment).Kept++ // not known to be gone
			continue
		}
		p.deletes = append(p.deletes, k.Ref(gr))
	}
	slices.SortFunc(p.deletes, func(a, b object.Ref) int { return strings.Compare(layout.Key(a), layout.Key(b)) })
	p.namespaces = len(namespaces)
	return p
}

// holdDeletes decides whether the planned deletes may run: not while a
// standing hold is set, and not when they exceed maxFraction of the stored
// objects (unless allowed). It returns why they are held, or "".
func holdDeletes(deletes, objects int, maxFraction float64, allow bool, standing string) string {
	switch {
	case deletes == 0:
		return ""
	case standing != "":
		return standing
	case allow || maxFraction >= 1:
		return ""
	case float64(deletes) > maxFraction*float64(objects):
		return fmt.Sprintf("%d of %d stored objects would be deleted, more than max-prune-fraction %g", deletes, objects, maxFraction)
	}
	return ""
}

// Run makes one pass. It completes what it can; an error means some keys
// could not be repaired (they stay queued in the writer), or deletes were
// held back.
func (p *Pass) Run(ctx context.Context) (Result, error) {
	start := time.Now()
	log := p.Log.With(logging.Component("snapshot"))
	log.Info("Snapshot pass started", logging.Op(logging.OpSnapshotStart))

	prefix := p.Layout.Root()
	since := p.Ledger.Seq()
	have, err := ownKeys(ctx, p.Store, prefix, p.Layout, p.Identity, p.Ledger.Known, p.Signer)
	if err != nil {
		p.Metrics.Error(logging.OpStoreList)
		p.Metrics.Duration.Observe(time.Since(start).Seconds())
		log.Error("Snapshot pass failed to list the store", logging.Op(logging.OpBackupComplete), zap.Error(err))
		return Result{Counts: Counts{Errors: 1}, Duration: time.Since(start)}, fmt.Errorf("list store: %w", err)
	}
	for key := range p.verify(ctx, log, have) {
		p.Ledger.Forget(key)
		have[key] = "" // matches no cache: written again
	}
	// Incomplete is read before the caches, so that a type which completes
	// meanwhile is reported as it was planned.
	incomplete, denied := p.Source.Incomplete(), p.Source.Denied()
	skipInvalid, maxPrune := p.Settings.SkipInvalid(), p.Settings.MaxPruneFraction()
	pl := plan(p.Layout, have, p.Source, skipInvalid)
	p.reportInvalid(log, pl.invalid, skipInvalid)

	held := holdDeletes(len(pl.deletes), pl.objects, maxPrune, p.AllowMassPrune, p.Holds.Reason())
	if held != "" {
		p.Metrics.PruneGuard.Set(1)
		p.Metrics.Error(logging.OpPruneGuard)
		log.Error("Deletes held back: no stored object is deleted by this pass", logging.Op(logging.OpPruneGuard),
			logging.Data(map[string]any{"would_delete": len(pl.deletes), "stored": pl.objects,
				"max_prune_fraction": maxPrune, "reason": held}))
		for _, ref := range pl.deletes {
			pl.count(ref.Segment()).Kept++
		}
		pl.deletes = nil
	} else {
		p.Metrics.PruneGuard.Set(0)
	}

	p.apply(ctx, pl, since, skipInvalid)
	return p.report(log, pl, incomplete, denied, held, start)
}

func (p *Pass) reportInvalid(log *zap.Logger, invalid []invalidObject, skipInvalid bool) {
	for _, o := range invalid {
		resource := o.ref.Segment()
		data := logging.Data(map[string]any{"name": o.ref.Name, "reason": encode.Reason(o.err)})
		if skipInvalid {
			p.Metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
			log.Warn("Object skipped", logging.Op(logging.OpResourceFilter), logging.Namespace(o.ref.Namespace), logging.Resource(resource), zap.Error(o.err), data)
		} else {
			p.Metrics.Error(logging.OpObjectEncode)
			log.Error("Object cannot be stored", logging.Op(logging.OpObjectWrite), logging.Namespace(o.ref.Namespace), logging.Resource(resource), zap.Error(o.err), data)
		}
	}
}

// apply hands the planned writes and deletes to the writer and counts the
// outcomes. The writer runs BATCH_SIZE store calls at a time. The pass
// feeds it batches, many in flight, so the writer never idles while a
// batch waits for its slowest call, and the queue never holds more than a
// window of keys however large the cluster.
func (p *Pass) apply(ctx context.Context, pl *planned, since uint64, skipInvalid bool) {
	for r, c := range pl.counts {
		if c.Unchanged > 0 {
			p.Metrics.Resources.WithLabelValues(r, metrics.Unchanged).Add(float64(c.Unchanged))
		}
	}
	todo := interleave(append(pl.writes, pl.deletes...))
	type chunk struct {
		refs []object.Ref
		out  []object.Outcome
		done chan struct{}
	}
	size := max(p.BatchSize, 1)
	var chunks []*chunk
	for i := 0; i < len(todo); i += size {
		chunks = append(chunks, &chunk{refs: todo[i:min(i+size, len(todo))], done: make(chan struct{})})
	}
	inFlight := make(chan struct{}, batchesInFlight)
	go func() {
		for _, c := range chunks {
			inFlight <- struct{}{}
			go func() {
				defer func() { <-inFlight }()
				if ctx.Err() != nil {
					c.out = make([]object.Outcome, len(c.refs)) // all Failed
				} else {
					c.out = p.Writer.Apply(ctx, c.refs, since)
				}
				close(c.done)
			}()
		}
	}()
	done, written := 0, 0
	for _, c := range chunks {
		<-c.done
		for j, outcome := range c.out {
			cnt := pl.count(c.refs[j].Segment())
			switch outcome {
			case object.Written:
				cnt.BackedUp++
				written++
			case object.Unchanged:
				cnt.Unchanged++
			case object.Deleted:
				cnt.Deleted++
			case object.Skipped:
				cnt.cannotStore(encode.ReasonTooLarge, skipInvalid)
			case object.Invalid:
				cnt.cannotStore(encode.ReasonInvalid, skipInvalid)
			case object.Unstorable:
				cnt.Skipped++ // counted as an error once, by the writer
			case object.Kept:
				cnt.Kept++
			case object.Failed:
				cnt.Errors++
			}
		}
		done += len(c.refs)
		if p.Progress != nil {
			p.Progress(done, len(todo), written)
		}
	}
}

// report logs a line per resource and the pass's summary, and sets the
// pass's metrics.
func (p *Pass) report(log *zap.Logger, pl *planned, incomplete, denied []string, held string, start time.Time) (Result, error) {
	res := Result{Namespaces: pl.namespaces, Incomplete: incomplete, Denied: denied, PruneHeld: held}
	for _, r := range slices.Sorted(maps.Keys(pl.counts)) {
		c := pl.counts[r]
		res.add(*c)
		log.Info("Resource backup completed", logging.Op(logging.OpResourceBackupComplete), logging.Resource(r),
			logging.Data(map[string]any{
				"backed_up": c.BackedUp, "unchanged": c.Unchanged, "deleted": c.Deleted,
				"skipped": c.Skipped, "invalid": c.Invalid, "errors": c.Errors, "kept": c.Kept,
			}))
	}
	if held != "" {
		res.Errors++
	}
	res.Duration = time.Since(start)
	p.Metrics.Duration.Observe(res.Duration.Seconds())
	p.Metrics.Incomplete.Set(float64(len(incomplete)))
	fields := map[string]any{
		"backed_up": res.BackedUp, "unchanged": res.Unchanged, "deleted": res.Deleted,
		"skipped": res.Skipped, "invalid": res.Invalid, "errors": res.Errors, "kept": res.Kept,
		"namespaces": res.Namespaces, "duration_ms": logging.Millis(res.Duration),
	}
	if len(incomplete) > 0 {
		fields["incomplete"] = incomplete
	}
	if len(denied) > 0 {
		fields["denied"] = denied
	}
	if held != "" {
		fields["prune_held"] = held
	}
	data := logging.Data(fields)
	if res.Errors > 0 {
		p.Metrics.Error(logging.OpSnapshot)
		log.Error("Backup completed with errors", logging.Op(logging.OpBackupComplete), logging.Duration(res.Duration), data)
		return res, fmt.Errorf("snapshot pass: %d errors", res.Errors)
	}
	if failing := without(incomplete, denied); len(failing) > 0 {
		// Everything that could be listed is backed up; the pass does not
		// count as a success while types are missing from it by a fault.
		log.Warn("Backup completed without the types that could not be listed", logging.Op(logging.OpBackupComplete), logging.Duration(res.Duration), data)
		return res, fmt.Errorf("snapshot pass: types not listed: %s", strings.Join(failing, ", "))
	}
	p.Metrics.LastSuccess.SetToCurrentTime()
	p.Metrics.Namespaces.Set(float64(res.Namespaces))
	log.Info("Backup completed successfully", logging.Op(logging.OpBackupComplete), logging.Duration(res.Duration), data)
	return res, nil
}

// without is list less the elements of drop.
func without(list, drop []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(drop, s) {
			out = append(out, s)
		}
	}
	return out
}

// interleave orders refs so that consecutive writes go to different
// folders ({namespace}/{resource}/) in turn: on a filesystem-backed store
// (MinIO on a drive), concurrent writes into one folder contend for it, and
// a pass over a cluster sorted by namespace would write one folder at a
// time. The order is deterministic.
func interleave(refs []object.Ref) []object.Ref {
	slices.SortFunc(refs, func(a, b object.Ref) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Group, b.Group),
			cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Name, b.Name))
	})
	var folders [][]object.Ref
	for i := 0; i < len(refs); {
		j := i + 1
		for j < len(refs) && sameFolder(refs[i], refs[j]) {
			j++
		}
		folders = append(folders, refs[i:j])
		i = j
	}
	out := make([]object.Ref, 0, len(refs))
	for len(out) < len(refs) {
		for k, f := range folders {
			if len(f) > 0 {
				out = append(out, f[0])
				folders[k] = f[1:]
			}
		}
	}
	return out
}

func sameFolder(a, b object.Ref) bool {
	return a.Namespace == b.Namespace && a.Group == b.Group && a.Resource == b.Resource
}

// Summary is the one-line human summary of a pass, for stderr.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backup: %d written, %d unchanged, %d deleted, %d skipped, %d invalid, %d errors, %d namespaces in %s",
		r.BackedUp, r.Unchanged, r.Deleted, r.Skipped, r.Invalid, r.Errors, r.Namespaces, r.Duration.Round(time.Millisecond))
	if r.Kept > 0 {
		fmt.Fprintf(&b, "; %d stored objects kept", r.Kept)
	}
	if failing := without(r.Incomplete, r.Denied); len(failing) > 0 {
		fmt.Fprintf(&b, "; not listed: %s", strings.Join(failing, ", "))
	}
	if len(r.Denied) > 0 {
		fmt.Fprintf(&b, "; not permitted by RBAC (kept, not backed up): %s", strings.Join(r.Denied, ", "))
	}
	if r.PruneHeld != "" {
		fmt.Fprintf(&b, "; deletes held back: %s", r.PruneHeld)
	}
	return b.String()
}
