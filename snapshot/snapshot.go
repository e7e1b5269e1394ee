// Package snapshot is the safety net of the continuous path: a full pass that
// compares the informer caches with the store's listing and repairs every
// difference, so that after a pass the bucket provably equals the cluster.
// Writes go through the debounced writer, so a pass never races a watch event
// on the same key.
package snapshot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink"
)

// Source is the cluster as the informer caches hold it.
type Source interface {
	// Each calls visit for every cached object of every watched type with
	// the SHA-256 of its document; ok is false when the filters leave it
	// out, and err wraps filter.ErrInvalid when it cannot be stored.
	Each(visit func(ref object.Ref, sum string, ok bool, err error))
	// Incomplete names the resource segments whose caches are not
	// complete (syncing, or access denied); their stored keys are kept.
	Incomplete() map[string]bool
}

// Lister lists what the store holds.
type Lister interface {
	List(ctx context.Context, prefix string) ([]object.Stored, error)
}

// Applier writes or deletes keys now, through the writer's queue.
type Applier interface {
	// Seq is read before listing the store and passed to Apply, so that
	// keys the writer wrote after the listing are not written twice.
	Seq() uint64
	Apply(ctx context.Context, refs []object.Ref, since uint64) []sink.Outcome
}

// batchesInFlight is how many batches of BATCH_SIZE keys a pass has queued
// in the writer at once.
const batchesInFlight = 16

// Pass is one configured reconcile pass.
type Pass struct {
	Prefix    string
	Cluster   string
	BatchSize int
	// SkipInvalid counts objects that cannot be stored as skipped rather
	// than as errors (skip-invalid-resources).
	SkipInvalid bool
	Source      Source
	Store       Lister
	Writer      Applier
	Log         *zap.Logger
	Metrics     *metrics.Metrics
	// Progress, when set, is called after each batch with the objects
	// handled so far, the objects to handle and those written.
	Progress func(done, total, written int)
}

// Result counts what a pass did.
type Result struct {
	BackedUp   int
	Unchanged  int
	Deleted    int
	Skipped    int
	Invalid    int
	Errors     int
	Namespaces int
	Duration   time.Duration
}

type counts struct{ backedUp, unchanged, deleted, skipped, invalid, errors int }

// Run makes one pass. It completes what it can; an error means some keys
// could not be repaired (they stay queued in the writer).
func (p *Pass) Run(ctx context.Context) (Result, error) {
	start := time.Now()
	log := p.Log.With(logging.Component("snapshot"))
	log.Info("Snapshot pass started", logging.Op("snapshot_start"))

	prefix := object.ClusterPrefix(p.Prefix, p.Cluster)
	since := p.Writer.Seq()
	stored, err := p.Store.List(ctx, prefix)
	if err != nil {
		p.Metrics.Errors.WithLabelValues("store_list").Inc()
		p.Metrics.Duration.Observe(time.Since(start).Seconds())
		log.Error("Snapshot pass failed to list the store", logging.Op("backup_complete"), zap.Error(err))
		return Result{Errors: 1, Duration: time.Since(start)}, fmt.Errorf("list store: %w", err)
	}
	have := make(map[string]string, len(stored))
	for _, s := range stored {
		have[s.Key] = s.Meta.SHA256
	}

	byResource := map[string]*counts{}
	count := func(resource string) *counts {
		c := byResource[resource]
		if c == nil {
			c = &counts{}
			byResource[resource] = c
		}
		return c
	}
	live := map[string]bool{}
	namespaces := map[string]bool{}
	var todo []object.Ref
	p.Source.Each(func(ref object.Ref, sum string, ok bool, err error) {
		resource := object.ResourceSegment(ref.Group, ref.Resource)
		switch {
		case err != nil:
			c := count(resource)
			var inv *filter.InvalidError
			if errors.As(err, &inv) && inv.Reason == filter.ReasonTooLarge {
				c.skipped++
			} else {
				c.invalid++
			}
			reason := filter.ReasonInvalid
			if inv != nil {
				reason = inv.Reason
			}
			data := logging.Data(map[string]any{"name": ref.Name, "reason": reason})
			if p.SkipInvalid {
				p.Metrics.Resources.WithLabelValues(resource, metrics.Skipped).Inc()
				log.Warn("Object skipped", logging.Op("resource_filter"), logging.Namespace(ref.Namespace), logging.Resource(resource), zap.Error(err), data)
			} else {
				c.errors++
				p.Metrics.Errors.WithLabelValues("object_encode").Inc()
				log.Error("Object cannot be stored", logging.Op("object_write"), logging.Namespace(ref.Namespace), logging.Resource(resource), zap.Error(err), data)
			}
			key := ref.Key(p.Prefix, p.Cluster)
			live[key] = true // keep the last good version
		case ok:
			key := ref.Key(p.Prefix, p.Cluster)
			live[key] = true
			if ref.Namespace != "" {
				namespaces[ref.Namespace] = true
			}
			if have[key] == sum {
				count(resource).unchanged++
				p.Metrics.Resources.WithLabelValues(resource, metrics.Unchanged).Inc()
				return
			}
			todo = append(todo, ref)
		}
	})
	incomplete := p.Source.Incomplete()
	for key := range have {
		if live[key] {
			continue
		}
		ref, ok := object.ParseKey(p.Prefix, p.Cluster, key)
		if !ok {
			continue // not one of ours: never touch it
		}
		if incomplete[object.ResourceSegment(ref.Group, ref.Resource)] {
			continue // its type's cache is not complete: not known to be gone
		}
		todo = append(todo, ref)
	}
	todo = interleave(todo)

	// The writer runs BATCH_SIZE store calls at a time. The pass feeds it
	// batches, many in flight, so the writer never idles while a batch
	// waits for its slowest call, and the queue never holds more than a
	// window of keys however large the cluster.
	type chunk struct {
		refs []object.Ref
		out  []sink.Outcome
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
					c.out = make([]sink.Outcome, len(c.refs)) // all Failed
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
			cnt := count(object.ResourceSegment(c.refs[j].Group, c.refs[j].Resource))
			switch outcome {
			case sink.Written:
				cnt.backedUp++
				written++
			case sink.Unchanged:
				cnt.unchanged++
			case sink.Deleted:
				cnt.deleted++
			case sink.Skipped:
				cnt.skipped++
			case sink.Invalid:
				cnt.invalid++
				cnt.errors++
			case sink.Failed:
				cnt.errors++
			}
		}
		done += len(c.refs)
		if p.Progress != nil {
			p.Progress(done, len(todo), written)
		}
	}

	var total counts
	names := make([]string, 0, len(byResource))
	for r := range byResource {
		names = append(names, r)
	}
	sort.Strings(names)
	for _, r := range names {
		c := byResource[r]
		total.backedUp += c.backedUp
		total.unchanged += c.unchanged
		total.deleted += c.deleted
		total.skipped += c.skipped
		total.invalid += c.invalid
		total.errors += c.errors
		log.Info("Resource backup completed", logging.Op("resource_backup_complete"), logging.Resource(r),
			logging.Data(map[string]any{
				"backed_up": c.backedUp, "unchanged": c.unchanged, "deleted": c.deleted,
				"skipped": c.skipped, "invalid": c.invalid, "errors": c.errors,
			}))
	}
	res := Result{
		BackedUp: total.backedUp, Unchanged: total.unchanged, Deleted: total.deleted,
		Skipped: total.skipped, Invalid: total.invalid, Errors: total.errors,
		Namespaces: len(namespaces), Duration: time.Since(start),
	}
	p.Metrics.Duration.Observe(res.Duration.Seconds())
	data := logging.Data(map[string]any{
		"backed_up": res.BackedUp, "unchanged": res.Unchanged, "deleted": res.Deleted,
		"skipped": res.Skipped, "invalid": res.Invalid, "errors": res.Errors,
		"namespaces": res.Namespaces, "duration_ms": logging.Millis(res.Duration),
	})
	if res.Errors > 0 {
		p.Metrics.Errors.WithLabelValues("snapshot").Inc()
		log.Error("Backup completed with errors", logging.Op("backup_complete"), logging.Duration(res.Duration), data)
		return res, fmt.Errorf("snapshot pass: %d errors", res.Errors)
	}
	p.Metrics.LastSuccess.SetToCurrentTime()
	p.Metrics.Namespaces.Set(float64(res.Namespaces))
	log.Info("Backup completed successfully", logging.Op("backup_complete"), logging.Duration(res.Duration), data)
	return res, nil
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
	return b.String()
}
