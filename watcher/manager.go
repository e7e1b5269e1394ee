package watcher

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
)

// Queue receives every change the informers see.
type Queue interface {
	// Enqueue records a change, written after the debounce window.
	Enqueue(ref object.Ref)
	// Offer asks for an object of a first list to be written at once; it
	// returns false when the queue is full, and the snapshot pass that
	// follows the list writes the object instead.
	Offer(ref object.Ref) bool
}

// Options configure a Manager.
type Options struct {
	Rules filter.Rules
	// Rediscover is the period of discovery for aggregated APIs (60s).
	Rediscover time.Duration
	// Encrypter, when set, encrypts every Secret's values before its
	// document enters a cache (SECRET_ENCRYPTION).
	Encrypter *encrypt.Encrypter
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Manager runs one dynamic informer per selected resource type.
type Manager struct {
	dyn     *Client
	disc    discovery.DiscoveryInterface
	queue   Queue
	log     *zap.Logger
	metrics *metrics.Metrics
	opts    Options

	caches
	// desired are the rules last asked for; the caches' rules are those in
	// force.
	desired   filter.Rules
	openshift *bool // nil until the first discovery
	dropped   map[string]string
	forbidden map[schema.GroupResource]bool // logged once

	trigger chan struct{}
	synced  chan struct{}
}

// informer is one running informer and what it watches.
type informer struct {
	res        filter.Resource
	key        string // cacheKey of the rules it was built for
	gvr        schema.GroupVersionResource
	apiVersion string      // of every object it lists
	selected   atomic.Bool // backed up; false: watched only to follow owner references
	inf        cache.SharedIndexInformer
	cancel     context.CancelFunc
	stopped    chan struct{}
	denied     atomic.Bool
	failures   atomic.Int64 // list errors before its first complete list
	passed     atomic.Bool  // a snapshot pass has visited its complete cache
	dict       dictionary   // its documents are compressed against

	// While the first list streams in, the objects already transformed
	// wait in the reflector's own store, out of reach of the cache: they
	// are staged here so that the writer can render them.
	stageMu sync.RWMutex
	listing bool
	staged  map[string]*cached // by cache key (cache.ObjectName)
}

// New returns a Manager; Start begins watching.
func New(dyn *Client, disc discovery.DiscoveryInterface, queue Queue, opts Options, log *zap.Logger, m *metrics.Metrics) *Manager {
	if opts.Rediscover <= 0 {
		opts.Rediscover = time.Minute
	}
	return &Manager{
		caches: caches{
			log:       log,
			rules:     opts.Rules,
			informers: map[schema.GroupResource]*informer{},
			kinds:     map[schema.GroupKind]schema.GroupResource{},
		},
		dyn:       dyn,
		disc:      disc,
		queue:     queue,
		log:       log,
		metrics:   m,
		opts:      opts,
		desired:   opts.Rules,
		dropped:   map[string]string{},
		forbidden: map[schema.GroupResource]bool{},
		trigger:   make(chan struct{}, 1),
		synced:    make(chan struct{}, 1),
	}
}

// Start discovers the resource types and starts their informers. It fails
// only when discovery fails as a whole.
func (m *Manager) Start(ctx context.Context) error {
	return m.reconcile(ctx)
}

// Run re-discovers when CRDs change and every Rediscover period, until ctx
// is done; then it stops every informer.
func (m *Manager) Run(ctx context.Context) {
	defer m.stopAll()
	m.watchCRDs(ctx)
	tick := time.NewTicker(m.opts.Rediscover)
	defer tick.Stop()
	// A failed round is retried sooner than the next tick, so that a
	// reload made during an API outage applies soon after it ends.
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 64, Cap: m.opts.Rediscover}
	var retry <-chan time.Time
	if m.groupsFailing() {
		retry = time.After(backoff.Step())
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-retry:
		case <-m.trigger:
			// Let a burst of CRD events (create, then Established) settle.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		retry = nil
		err := m.reconcile(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Warn("Discovery failed; informers keep running", logging.Op(logging.OpDiscovery), zap.Error(err))
		}
		if err != nil || m.groupsFailing() {
			// Groups that fail discovery are retried soon too: their
			// stored objects wait, unpruned, for their informers.
			retry = time.After(backoff.Step())
		} else {
			backoff.Steps, backoff.Duration = 64, time.Second
		}
	}
}

// groupsFailing reports whether API groups failed discovery last round.
func (m *Manager) groupsFailing() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.failedGroups) > 0
}

// Rediscover asks Run for a discovery round soon.
func (m *Manager) Rediscover() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// SetRules asks for new filtering rules and applies them at once when
// discovery succeeds: informers for newly selected types start, those for
// deselected types stop, and those whose caches the rules shape are rebuilt,
// each new informer replacing its old one. When discovery fails, the rules
// in force, and every informer, stay until a later round succeeds (Run
// retries it soon).
func (m *Manager) SetRules(ctx context.Context, rules filter.Rules) error {
	m.mu.Lock()
	m.desired = rules
	m.mu.Unlock()
	err := m.reconcile(ctx)
	if err != nil {
		m.Rediscover()
	}
	return err
}

// watchCRDs triggers discovery whenever a CRD is added, changes (becomes
// Established) or goes away, so new types are backed up within seconds.
func (m *Manager) watchCRDs(ctx context.Context) {
	inf := dynamicinformer.NewFilteredDynamicInformer(m.dyn, crdGVR, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	_ = inf.SetTransform(func(obj any) (any, error) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			// Only the event matters here, not the (large) schema.
			unstructured.RemoveNestedField(u.Object, "spec", "versions")
		}
		return obj, nil
	})
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) {
			m.log.Info("Cannot watch CRDs; new types are found by periodic discovery", logging.Op(logging.OpDiscovery), zap.Error(err))
		}
	})
	kick := func() { m.Rediscover() }
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	})
	go inf.RunWithContext(ctx)
}

// reconcile runs one discovery round and makes the informers match it.
func (m *Manager) reconcile(ctx context.Context) error {
	start := time.Now()
	d, err := discover(m.disc)
	if err != nil {
		m.metrics.Error(logging.OpDiscovery)
		return err
	}
	for group, gerr := range d.failedGroups {
		m.metrics.Error(logging.OpDiscovery)
		m.log.Warn("API group discovery failed; retrying later", logging.Op(logging.OpDiscovery), zap.Error(gerr),
			logging.Data(map[string]any{"group": group}))
	}

	m.mu.Lock()
	rules := m.desired
	selected, dropped := rules.SelectResources(d.resources, m.detectOpenShift(rules, d))
	m.logDropped(dropped)
	m.kinds = map[schema.GroupKind]schema.GroupResource{}
	for _, r := range d.resources {
		m.kinds[schema.GroupKind{Group: r.Group, Kind: r.Kind}] = groupResource(r)
	}
	started, toStop := m.replaceInformers(ctx, wanted(rules, selected, dropped), d.failedGroups, rules)
	watched := m.indexSegments(dropped)
	m.failedGroups = slices.Sorted(maps.Keys(d.failedGroups))
	m.rules = rules
	m.mu.Unlock()

	for _, inf := range toStop {
		inf.stop()
	}
	m.metrics.Watched.Set(float64(watched))
	m.metrics.Incomplete.Set(float64(len(m.Incomplete())))
	if len(started) > 0 || len(toStop) > 0 {
		stopped := make([]string, 0, len(toStop))
		for _, inf := range toStop {
			stopped = append(stopped, groupResource(inf.res).String())
		}
		m.log.Info("Watching resource types", logging.Op(logging.OpDiscovery), logging.Duration(time.Since(start)), logging.Data(map[string]any{
			"watched": watched, "started": started, "stopped": stopped, "discovered": len(d.resources),
		}))
	}
	return nil
}

// detectOpenShift decides, and logs when it changes, whether the cluster
// is treated as OpenShift. Called with mu held.
func (m *Manager) detectOpenShift(rules filter.Rules, d discovered) bool {
	openshift := OpenShift(rules.OpenShiftMode, openShiftDetected(m.openshift, d))
	if m.openshift == nil || *m.openshift != openshift {
		m.log.Info("OpenShift detection", logging.Op(logging.OpDiscovery), logging.Data(map[string]any{
			"openshift": openshift, "mode": string(rules.OpenShiftMode), "detected": d.openshift,
		}))
		m.openshift = &openshift
	}
	return openshift
}

// wanted are the informers the rules ask for: the selected types, and,
// when owner references are followed, the types outside the mode, watched
// so that an object whose owner is backed up can be found and kept.
func wanted(rules filter.Rules, selected []filter.Resource, dropped []filter.Dropped) map[schema.GroupResource]*informer {
	key := cacheKey(rules)
	want := map[schema.GroupResource]*informer{}
	for _, r := range selected {
		want[groupResource(r)] = newInformer(r, key, true)
	}
	if rules.FollowOwnerReferences {
		for _, dr := range dropped {
			if dr.Reason == filter.ReasonNotInWhitelist {
				want[groupResource(dr.Resource)] = newInformer(dr.Resource, key, false)
			}
		}
	}
	return want
}

// replaceInformers starts the wanted informers that do not run yet and
// takes out of the map those to stop: no longer wanted (unless their
// group's discovery failed this round), at another version, denied, or
// built for other rules. The caller stops them only after their
// successors run; until a successor has listed its type, what it has not
// seen yet is Unknown, never Absent. Called with mu held.
func (m *Manager) replaceInformers(ctx context.Context, want map[schema.GroupResource]*informer, failedGroups map[string]error, rules filter.Rules) (started []string, toStop []*informer) {
	key := cacheKey(rules)
	for gr, running := range m.informers {
		w, ok := want[gr]
		_, groupFailed := failedGroups[gr.Group]
		switch {
		case !ok && groupFailed:
			// Discovery of its group failed this round: keep watching.
		case !ok, w.res.Version != running.res.Version, running.denied.Load(), running.key != key:
			toStop = append(toStop, running)
			delete(m.informers, gr)
		default:
			running.selected.Store(w.selected.Load())
		}
	}
	for gr, w := range want {
		if _, ok := m.informers[gr]; ok {
			continue
		}
		m.startInformer(ctx, w, rules)
		m.informers[gr] = w
		started = append(started, gr.String())
	}
	sort.Strings(started)
	return started, toStop
}

// indexSegments maps the stored segments of every type this round knows
// (running informers and types the rules leave out) back to the types,
// and returns how many types are backed up. Called with mu held.
func (m *Manager) indexSegments(dropped []filter.Dropped) (watched int) {
	types := make([]object.GroupResource, 0, len(dropped)+len(m.informers))
	for _, dr := range dropped {
		types = append(types, object.GroupResource{Group: dr.Resource.Group, Resource: dr.Resource.Resource})
	}
	for gr, inf := range m.informers {
		types = append(types, object.GroupResource(gr))
		if inf.selected.Load() {
			watched++
		}
	}
	var err error
	if m.segments, err = object.NewSegments(types); err != nil {
		m.log.Warn("Types share a storage segment; their stored keys are never pruned", logging.Op(logging.OpDiscovery), zap.Error(err))
	}
	return watched
}

// logDropped explains, once per change, each resource type left out.
func (m *Manager) logDropped(dropped []filter.Dropped) {
	now := map[string]string{}
	for _, d := range dropped {
		gr := d.Resource.GroupResource()
		now[gr] = d.Reason
		if m.dropped[gr] != d.Reason {
			m.log.Debug("Resource filtered out by configuration", logging.Op(logging.OpResourceFilter),
				logging.Resource(d.Resource.Segment()), logging.Data(map[string]any{"reason": d.Reason}))
		}
	}
	m.dropped = now
}

// cacheKey covers every rule that shapes what the caches hold; informers
// restart when it changes.
func cacheKey(r filter.Rules) string {
	return fmt.Sprintf("%s|%v|%v|%v|%d|%d|%v", serverSelector(r), r.SelectsLabels(), r.IncludeManagedFields, r.IncludeStatus,
		r.MaxResourceSize, len(r.AnnotationKeys()), r.AnnotationKeys())
}

func groupResource(r filter.Resource) schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Resource}
}

// serverSelector is the label selector sent to the API server. With
// follow-owner-references it is applied client-side instead, because an
// owned object must be seen even when its labels do not match.
func serverSelector(r filter.Rules) string {
	if r.FollowOwnerReferences || r.LabelSelector == nil {
		return ""
	}
	return r.LabelSelector.String()
}

func (m *Manager) startInformer(ctx context.Context, w *informer, rules filter.Rules) {
	w.gvr = schema.GroupVersionResource{Group: w.res.Group, Version: w.res.Version, Resource: w.res.Resource}
	w.apiVersion = w.gvr.GroupVersion().String()
	selector := serverSelector(rules)
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = selector }
	transform := m.transform(w, rules)
	w.inf = cache.NewSharedIndexInformerWithOptions(m.dyn.listWatch(w.gvr, w.res.Kind, tweak, transform), &unstructured.Unstructured{},
		cache.SharedIndexInformerOptions{ObjectDescription: w.gvr.String()})
	_ = w.inf.SetTransform(transform)
	gr := groupResource(w.res)
	_ = w.inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
			// A type that cannot be listed (a conversion webhook that is
			// down, a 5xx) stays incomplete, and the reflector keeps
			// retrying with backoff; the others go on.
			if w.inf.HasSynced() {
				m.log.Debug("Watch ended; relisting", logging.Op(logging.OpResourceList), logging.Resource(w.res.Segment()), zap.Error(err))
				return
			}
			m.metrics.Error(logging.OpResourceList)
			if w.failures.Add(1) == 1 {
				m.log.Error("Failed to list resources; retrying, its stored objects are kept", logging.Op(logging.OpResourceList),
					logging.Resource(w.res.Segment()), zap.Error(err))
			}
			return
		}
		w.denied.Store(true)
		m.mu.Lock()
		first := !m.forbidden[gr]
		m.forbidden[gr] = true
		m.mu.Unlock()
		if first {
			m.metrics.Error(logging.OpResourceList)
			m.log.Error("Failed to list resources", logging.Op(logging.OpResourceList), logging.Resource(w.res.Segment()), zap.Error(err))
		}
		// Stop retrying until the next discovery round, which starts a
		// fresh informer in case permissions were granted meanwhile.
		w.cancel()
	})
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		o, err := metaAccessor(obj)
		if err != nil {
			return // not an object: nothing to key
		}
		m.queue.Enqueue(object.Ref{Group: w.res.Group, Resource: w.res.Resource, Namespace: o.GetNamespace(), Name: o.GetName()})
	}
	// present is an object now in the cache: the dependents that awaited
	// it as their owner are judged again.
	present := func(obj any) {
		if o, err := metaAccessor(obj); err == nil {
			for _, ref := range m.arrived(o.GetUID()) {
				m.queue.Enqueue(ref)
			}
		}
	}
	_, _ = w.inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, isInInitialList bool) {
			// The first list is backed up by the snapshot pass that
			// follows the sync, in bounded batches, rather than by
			// queueing every object at once.
			if !isInInitialList {
				enqueue(obj)
			}
			present(obj)
		},
		UpdateFunc: func(_, obj any) { enqueue(obj); present(obj) },
		DeleteFunc: enqueue,
	})
	ictx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	w.stopped = make(chan struct{})
	w.setListing(true)
	go func() {
		defer close(w.stopped)
		w.inf.RunWithContext(ictx)
	}()
	go func() {
		synced := cache.WaitForCacheSync(ictx.Done(), w.inf.HasSynced)
		w.setListing(false)
		if synced && !w.passed.Load() {
			select {
			case m.synced <- struct{}{}:
			default:
			}
		}
	}()
}

// transform is the informer's transform: it compacts each object and,
// during the first list, stages it and offers it to the writer if the rules
// keep it, so that the
// first backup of a large type runs while its list is still streaming
// rather than after it. With follow-owner-references objects wait for the
// pass after the sync, because an owner may not be cached yet.
func (m *Manager) transform(w *informer, rules filter.Rules) cache.TransformFunc {
	compactObject := compact(rules, rules.AnnotationKeys(), m.opts.Encrypter, &w.dict)
	stream := !rules.FollowOwnerReferences
	return func(obj any) (any, error) {
		out, err := compactObject(obj)
		c, fresh := out.(*cached)
		if _, decoded := obj.(*unstructured.Unstructured); !decoded || !fresh || !stream || err != nil {
			return out, err
		}
		if !w.stage(c) {
			return out, nil
		}
		// Only what the rules keep is offered: a namespace filter is
		// applied here, not by the list.
		if keep, _ := rules.KeepObject(w.res, c, w.selected.Load(), m); keep {
			m.queue.Offer(object.Ref{Group: w.res.Group, Resource: w.res.Resource, Namespace: c.namespace, Name: c.name})
		}
		return out, nil
	}
}

// setListing starts or ends the first list; at its end the staged objects
// are in the cache.
func (w *informer) setListing(on bool) {
	w.stageMu.Lock()
	defer w.stageMu.Unlock()
	w.listing = on
	if on {
		w.staged = map[string]*cached{}
	} else {
		w.staged = nil
	}
}

// stage keeps c until the first list ends. It returns false once it has.
func (w *informer) stage(c *cached) bool {
	w.stageMu.Lock()
	defer w.stageMu.Unlock()
	if !w.listing {
		return false
	}
	w.staged[cache.NewObjectName(c.namespace, c.name).String()] = c
	return true
}

// get finds an object in the cache, or among the staged ones.
func (w *informer) get(key string) (*cached, bool) {
	if item, exists, err := w.inf.GetStore().GetByKey(key); err == nil && exists {
		c, ok := item.(*cached)
		return c, ok
	}
	// Once synced, the cache holds the whole list and is the truth: the
	// staged copies live on until the sync is noticed (setListing), and an
	// object deleted meanwhile must not be read from them.
	if w.inf.HasSynced() {
		return nil, false
	}
	w.stageMu.RLock()
	defer w.stageMu.RUnlock()
	c, ok := w.staged[key]
	return c, ok
}

// Listed receives after an informer has completed its first list. Its
// objects are in no write queue: a snapshot pass backs them up. NeedsPass
// tells whether a pass has done so meanwhile.
func (m *Manager) Listed() <-chan struct{} { return m.synced }

// NeedsPass reports whether an informer has completed its first list since
// the last snapshot pass.
func (m *Manager) NeedsPass() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, inf := range m.informers {
		if inf.complete() && !inf.passed.Load() {
			return true
		}
	}
	return false
}

func metaAccessor(obj any) (metav1.Object, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u, nil
	}
	if o, ok := obj.(metav1.Object); ok {
		return o, nil
	}
	return nil, fmt.Errorf("%T is not an object", obj)
}

func newInformer(r filter.Resource, key string, selected bool) *informer {
	w := &informer{res: r, key: key}
	w.selected.Store(selected)
	return w
}

func (w *informer) stop() {
	w.cancel()
	<-w.stopped
}

// stopAll stops every informer but keeps their caches readable, so that the
// writer's final flush still renders the objects it has pending.
func (m *Manager) stopAll() {
	m.mu.RLock()
	all := slices.Collect(maps.Values(m.informers))
	m.mu.RUnlock()
	for _, inf := range all {
		inf.stop()
	}
	m.metrics.Watched.Set(0)
}

// complete reports whether the informer's cache holds its whole type: it
// has completed a list in this process, is still running and is not
// denied. Only then may an object missing from it be taken for gone.
func (w *informer) complete() bool {
	return w.inf.HasSynced() && !w.denied.Load()
}

// WaitForSync waits until every informer has listed its type once, or was
// denied access, or until timeout (0: no bound). It returns ctx's error if
// ctx ends first. A type still not listed when it returns is incomplete
// (Incomplete): its stored objects are kept, and its informer keeps
// retrying.
func (m *Manager) WaitForSync(ctx context.Context, timeout time.Duration) error {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err := wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		return m.Synced(), nil
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		// A list can fail without an error reaching the informer (a
		// watch-list that the server holds open): a type still not
		// listed is counted as a list failure once.
		m.mu.RLock()
		for _, inf := range m.informers {
			if !inf.inf.HasSynced() && !inf.denied.Load() && inf.failures.Add(1) == 1 {
				m.metrics.Error(logging.OpResourceList)
				m.log.Error("Resource type not listed within SYNC_TIMEOUT; retrying, its stored objects are kept",
					logging.Op(logging.OpResourceList), logging.Resource(inf.res.Segment()))
			}
		}
		m.mu.RUnlock()
		incomplete := m.Incomplete()
		m.metrics.Incomplete.Set(float64(len(incomplete)))
		m.log.Warn("Sync timeout passed; going on without the types not listed yet, whose stored objects are kept",
			logging.Op(logging.OpResourceList), logging.Data(map[string]any{"incomplete": incomplete, "timeout_ms": timeout.Milliseconds()}))
	}
	return nil
}
