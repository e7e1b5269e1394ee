package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/metrics"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/pack"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/snapshot"
	"github.com/cluster-backup/cluster-backup/watcher"
)

// passRetryDelay is how soon a pass that could not list the store is tried
// again while objects an informer listed wait for it.
var passRetryDelay = 10 * time.Second

// leaderPassGrace is how long after SYNC_TIMEOUT a leader may go without
// completing its first pass before /healthz fails.
const leaderPassGrace = 10 * time.Minute

// overflowCheck is how often the leader looks for changes dropped by a
// full write queue.
var overflowCheck = 5 * time.Second

// Shutdown budget: flush for at most 25 s, so that the process exits within
// the 30 s a Pod is given by default.
const flushTimeout = 25 * time.Second

// shutdownIndexTimeout bounds the write of the change index at shutdown,
// after the flush: a store that fails it (and minio-go retrying) must not
// keep the process past its 30 s.
const shutdownIndexTimeout = 3 * time.Second

// pipeline is the wired service: informers feeding the debounced writer,
// and the snapshot pass over both.
type pipeline struct {
	manager *watcher.Manager
	writer  *sink.Writer
	ledger  *sink.Ledger // what the writer knows the store to hold
	health  *sink.Health
	store   sink.Store // decorated: retries, health, rate limit
	holds   *object.Holds
	// settings are the reloadable settings the writer and the pass read.
	settings *object.Settings
	pass     *snapshot.Pass
	journal  *journal.Recorder // nil on a directory store
	reg      *prometheus.Registry
	metrics  *metrics.Metrics
	// pack is the restore pack last written or found: whether one is
	// stored, when this process wrote it, and the writer's sequence then.
	pack struct {
		stored bool
		at     time.Time
		seq    uint64
	}
}

// layout is where this cluster's backup lives in the store.
func (s *Service) layout() object.Layout {
	return object.Layout{Prefix: s.cfg.BackupPrefix, Cluster: s.cfg.ClusterName}
}

// telemetry creates the registry and the service's metrics on it.
func telemetry() (*prometheus.Registry, *metrics.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	metrics.RegisterClientGo(reg)
	return reg, m
}

// build wires the pipeline over the connected store.
func (s *Service) build(reg *prometheus.Registry, m *metrics.Metrics) (*pipeline, error) {
	dyn, err := watcher.NewDynamicClient(s.kube)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(s.kube)
	if err != nil {
		return nil, err
	}

	var limiter *rate.Limiter
	if s.cfg.StoreQPS > 0 {
		limiter = rate.NewLimiter(rate.Limit(s.cfg.StoreQPS), max(1, s.cfg.BatchSize))
	}
	health := sink.WithHealth(sink.WithRateLimit(s.store, limiter), m.StoreUp)
	store := sink.WithRetry(health, s.cfg.RetryAttempts, s.cfg.RetryDelay)
	holds := &object.Holds{}
	s.checkVersioning(m, holds)
	s.checkObjectLock(m)
	settings := object.NewSettings(s.cfg.Rules.SkipInvalidResources, s.cfg.MaxPruneFraction)
	m.ConfigHash.Set(float64(config.Hash(s.cfg.ConfigData)))
	m.ConfigReloadTime.SetToCurrentTime()

	// The change journal goes where the restore pack goes: to S3 stores.
	var rec *journal.Recorder
	if _, ok := s.store.(pack.Streamer); ok {
		rec = journal.NewRecorder(store, s.layout(), s.cfg.Signer, s.log.With(logging.Component("sink")), m)
	}
	writer := sink.NewWriter(store, sink.WriterOptions{
		Journal:       rec,
		Layout:        s.layout(),
		Debounce:      s.cfg.Debounce,
		Workers:       s.cfg.BatchSize,
		RetryDelay:    s.cfg.RetryDelay,
		RetryAttempts: s.cfg.RetryAttempts,
		Settings:      settings,
		QueueMetrics:  metrics.NewWorkqueueProvider(reg),
		Holds:         holds,
		Signer:        s.cfg.Signer,
	}, s.log.With(logging.Component("sink")), m, clock.RealClock{})
	s.checkSecrets(m)
	s.checkIntegrity(m)
	manager := watcher.New(dyn, disc, writer, watcher.Options{Rules: s.cfg.Rules, Encrypter: s.cfg.Encrypter}, s.log.With(logging.Component("watcher")), m)
	pass := &snapshot.Pass{
		Layout:         s.layout(),
		BatchSize:      s.cfg.BatchSize,
		Settings:       settings,
		AllowMassPrune: s.cfg.AllowMassPrune,
		Holds:          holds,
		Source:         manager,
		Store:          store,
		Writer:         writer,
		Ledger:         writer.Ledger(),
		Log:            s.log,
		Metrics:        m,
	}
	pass.Signer = s.cfg.Signer
	if reader, ok := s.store.(snapshot.Reader); ok && s.cfg.VerifyInterval > 0 {
		pass.Verify = &snapshot.Verify{Reader: reader, Interval: s.cfg.VerifyInterval, Period: s.cfg.SnapshotInterval}
	}
	return &pipeline{manager: manager, writer: writer, ledger: writer.Ledger(), health: health, store: store, holds: holds, settings: settings, pass: pass, journal: rec, reg: reg, metrics: m}, nil
}

// checkSecrets exports whether Secrets are encrypted and warns when they
// are stored in the clear.
func (s *Service) checkSecrets(m *metrics.Metrics) {
	if s.cfg.Encrypter != nil {
		m.SecretsEncrypted.Set(1)
		return
	}
	m.SecretsEncrypted.Set(0)
	secrets := filter.Resource{Version: "v1", Resource: "secrets", Singular: "secret", Kind: "Secret", Namespaced: true}
	if selected, _ := s.cfg.Rules.SelectResources([]filter.Resource{secrets}, false); len(selected) > 0 {
		s.log.Warn("Secrets are stored in the clear: whoever reads the bucket reads them; set SECRET_ENCRYPTION or exclude secrets",
			logging.Component("main"), logging.Op(logging.OpDiscovery))
	}
}

// checkIntegrity exports whether documents are signed and warns when they
// are not: without INTEGRITY_KEY, whoever can write the bucket can forge a
// document and its sha256, and a restore would believe it.
func (s *Service) checkIntegrity(m *metrics.Metrics) {
	if s.cfg.Signer != nil {
		m.DocumentsSigned.Set(1)
		return
	}
	m.DocumentsSigned.Set(0)
	s.log.Warn("Documents are stored without an integrity tag: whoever can write the bucket can forge them; set INTEGRITY_KEY",
		logging.Component("main"), logging.Op(logging.OpDiscovery))
}

// bucketVersioning says whether the store is a bucket and whether it keeps
// versions, as read at start.
func (s *Service) bucketVersioning() (keeps, isBucket bool) {
	v, isBucket := s.store.(interface{ Versioning() bool })
	return isBucket && v.Versioning(), isBucket
}

// checkVersioning exports whether the bucket keeps versions and, with
// REQUIRE_VERSIONING, holds every delete back when it does not: a delete
// from an unversioned bucket cannot be undone. The directory store keeps no
// versions and is exempt (its deletes are final, as documented).
func (s *Service) checkVersioning(m *metrics.Metrics, holds *object.Holds) {
	keeps, isBucket := s.bucketVersioning()
	switch {
	case !isBucket:
		m.Versioning.Set(0)
	case keeps:
		m.Versioning.Set(1)
	default:
		m.Versioning.Set(0)
		data := logging.Data(map[string]any{"bucket": s.cfg.MinIOBucket, "require_versioning": s.cfg.RequireVersioning})
		if s.cfg.RequireVersioning {
			holds.Set("versioning", "bucket "+s.cfg.MinIOBucket+" keeps no versions (REQUIRE_VERSIONING=true)")
			s.log.Warn("Bucket versioning is off: nothing will be deleted from it; enable versioning or set REQUIRE_VERSIONING=false",
				logging.Component("sink"), logging.Op(logging.OpMinIOConnect), data)
		} else {
			s.log.Warn("Bucket versioning is off: a deleted object's last backup is gone for good",
				logging.Component("sink"), logging.Op(logging.OpMinIOConnect), data)
		}
	}
}

// checkObjectLock exports the bucket's default Object Lock and says it in
// a start-up line: under a lock, no version the service wrote can be
// deleted or overwritten for the retention, by anyone holding its
// credentials (compliance) or without the right to bypass it (governance);
// the service's deletes are delete markers, which the lock allows.
func (s *Service) checkObjectLock(m *metrics.Metrics) {
	l, ok := s.store.(interface{ ObjectLock() sink.Lock })
	if !ok {
		m.ObjectLock.Set(0)
		return
	}
	lock := l.ObjectLock()
	m.ObjectLock.Set(map[string]float64{"governance": 1, "compliance": 2}[lock.Mode])
	data := logging.Data(map[string]any{"bucket": s.cfg.MinIOBucket, "mode": lock.Mode, "retention_days": lock.Days})
	if lock.Mode == "" {
		data = logging.Data(map[string]any{"bucket": s.cfg.MinIOBucket, "mode": "none"})
	}
	s.log.Info("Bucket object lock", logging.Component("sink"), logging.Op(logging.OpMinIOConnect), data)
	if s.cfg.ObjectLock != "" && lock.Mode == "" {
		s.log.Warn("OBJECT_LOCK is set but the bucket has no Object Lock: it can only be turned on when a bucket is created",
			logging.Component("sink"), logging.Op(logging.OpMinIOConnect), data)
	}
}

// claimPrefix records this cluster's identity (the UID of its kube-system
// namespace) in the marker under the cluster prefix, or finds it there. A
// marker naming another cluster means two clusters share CLUSTER_NAME: this
// service then deletes nothing. Every object it writes carries the identity
// too, so that neither service ever deletes the other's objects.
func (s *Service) claimPrefix(ctx context.Context, p *pipeline) error {
	log := s.log.With(logging.Component("main"), logging.Op(logging.OpClusterIdentity))
	ns, err := s.clients.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		// Without an identity, nothing tells this cluster from another.
		p.holds.Set("cluster_identity", "the cluster's identity (kube-system namespace UID) could not be read")
		p.metrics.Error(logging.OpClusterIdentity)
		log.Error("Cannot read the cluster's identity; nothing will be deleted from the store", zap.Error(err))
		return nil
	}
	uid := string(ns.UID)
	own := object.Identity{Cluster: s.cfg.ClusterName, UID: uid}
	p.ledger.SetIdentity(own)
	p.pass.Identity = own
	key := s.layout().IdentityKey()
	// A GET, not a listing: every S3 store returns user metadata with
	// the object, not all of them in listings.
	body, meta, err := p.store.Get(ctx, key, "")
	switch {
	case errors.Is(err, sink.ErrNotFound), err == nil && meta.ClusterUID == "":
		// no marker, or one without an owner: claim it
	case err != nil:
		return fmt.Errorf("read the cluster identity marker %s: %w", key, err)
	case meta.ClusterUID == uid:
		// ours: with the clusters it adopted (cluster-backup adopt),
		// whose keys are its own
		marked := object.ParseIdentity(body)
		own.Adopted = marked.Adopted
		p.ledger.SetIdentity(own)
		p.pass.Identity = own
		return nil
	default:
		// Another cluster owns the prefix: this service writes nothing
		// into it, so that neither overwrites the other's objects (both
		// clusters hold kube-system, system: roles and more under the same
		// keys), until the marker names this cluster (cluster-backup
		// adopt) or the process is stopped.
		p.metrics.PrefixHeld.Set(1)
		p.metrics.Error(logging.OpClusterIdentity)
		log.Error("CLUSTER_NAME is already used by another cluster: this service writes nothing into its prefix; give this cluster its own CLUSTER_NAME, or, if this cluster replaced that one, take the prefix over with cluster-backup adopt",
			logging.Data(map[string]any{"cluster_name": s.cfg.ClusterName, "marker": key, "owner_uid": meta.ClusterUID, "cluster_uid": uid}))
		if s.held == nil {
			return fmt.Errorf("CLUSTER_NAME %q is used by another cluster (kube-system UID %s; this cluster is %s): nothing was written", s.cfg.ClusterName, meta.ClusterUID, uid)
		}
		s.held.Store(true)
		defer s.held.Store(false)
		marked, err := s.awaitPrefix(ctx, p, key, uid)
		if err != nil {
			return err
		}
		p.metrics.PrefixHeld.Set(0)
		own.Adopted = marked.Adopted
		p.ledger.SetIdentity(own)
		p.pass.Identity = own
		log.Info("The prefix names this cluster now: writing", logging.Data(map[string]any{"marker": key, "cluster_uid": uid}))
		return nil
	}
	body = own.Marshal()
	marker := object.Meta{UID: uid, ClusterUID: uid, SHA256: object.Digest(body)}
	if err := p.store.Put(ctx, key, body, marker); err != nil {
		return fmt.Errorf("write the cluster identity marker %s: %w", key, err)
	}
	log.Info("Recorded the cluster's identity", logging.Data(map[string]any{"marker": key, "cluster_uid": uid}))
	return nil
}

// prefixPoll is how often a held service reads the identity marker again.
var prefixPoll = 10 * time.Second

// awaitPrefix reads the identity marker every prefixPoll until it names
// the cluster uid, and returns what it records; an unreadable marker is
// read again at the next poll.
func (s *Service) awaitPrefix(ctx context.Context, p *pipeline, key, uid string) (object.Identity, error) {
	t := time.NewTicker(prefixPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return object.Identity{}, ctx.Err()
		case <-t.C:
		}
		if body, meta, err := p.store.Get(ctx, key, ""); err == nil && meta.ClusterUID == uid {
			return object.ParseIdentity(body), nil
		}
	}
}

// watchPrefix reads the identity marker every prefixPoll while the
// service writes: once it names another cluster (cluster-backup adopt ran
// for the cluster that replaces this one), the writer pauses and nothing
// more is written into the prefix, which cluster_backup_prefix_held says;
// should the marker name this cluster again, writing resumes and the next
// pass repairs what changed meanwhile.
func (s *Service) watchPrefix(ctx context.Context, p *pipeline) {
	uid := p.pass.Identity.UID
	if uid == "" {
		return // the identity could not be read: deletes are held anyway
	}
	key := s.layout().IdentityKey()
	log := s.log.With(logging.Component("main"), logging.Op(logging.OpClusterIdentity))
	t := time.NewTicker(prefixPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, meta, err := p.store.Get(ctx, key, "")
		if err != nil || meta.ClusterUID == "" {
			continue // unreadable, or no owner: keep going as it is
		}
		switch lost := meta.ClusterUID != uid; {
		case lost && !p.writer.Paused():
			p.writer.Pause()
			p.metrics.PrefixHeld.Set(1)
			p.metrics.Error(logging.OpClusterIdentity)
			log.Error("Another cluster took the prefix over (cluster-backup adopt): this service writes nothing more into it",
				logging.Data(map[string]any{"marker": key, "owner_uid": meta.ClusterUID, "cluster_uid": uid}))
		case !lost && p.writer.Paused():
			p.writer.Resume()
			p.metrics.PrefixHeld.Set(0)
			log.Info("The prefix names this cluster again: writing", logging.Data(map[string]any{"marker": key, "cluster_uid": uid}))
		}
	}
}

// passFor returns the pass to run. The first pass after start-up compares
// the caches with what the writer learnt from listing the store moments
// earlier (Seed) and wrote since; later passes list the store, so that they
// also repair changes made to the bucket from outside.
func (p *pipeline) passFor(first bool) *snapshot.Pass {
	if !first {
		return p.pass
	}
	pass := *p.pass
	pass.Store, pass.Signer = p.ledger, nil // the writer's record: what it wrote and accepted
	return &pass
}

// start seeds the writer, starts the informers and the writer, and waits for
// the caches to sync. The returned function stops everything: informers
// first, then a bounded flush of pending writes.
func (s *Service) start(ctx context.Context, p *pipeline) (stop func(), err error) {
	begin := time.Now()
	if err := s.claimPrefix(ctx, p); err != nil {
		return nil, err
	}
	seeded, err := p.ledger.Seed(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the store: %w", err)
	}
	p.pack.stored = seeded.Pack
	versioning, _ := s.bucketVersioning()
	s.log.Info("Store capabilities", logging.Component("sink"), logging.Op(logging.OpMinIOConnect),
		logging.Data(map[string]any{"metadata_in_listings": !seeded.BareListings, "versioning": versioning,
			"change_index": seeded.BareListings, "indexed": seeded.Indexed, "own": seeded.Own}))
	if seeded.Foreign+seeded.Outside > 0 {
		s.log.Warn("Keys under the cluster's prefix that this cluster did not write are kept and never touched",
			logging.Component("sink"), logging.Op(logging.OpStoreList),
			logging.Data(map[string]any{"own": seeded.Own, "other_clusters": seeded.Foreign, "outside_layout": seeded.Outside}))
	}
	if err := p.manager.Start(ctx); err != nil {
		return nil, err
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	writeCtx, stopWriting := context.WithCancel(context.WithoutCancel(ctx))
	managerDone, writerDone := make(chan struct{}), make(chan struct{})
	go func() {
		p.manager.Run(watchCtx)
		close(managerDone)
	}()
	go func() {
		p.writer.Run(writeCtx, p.manager, flushTimeout)
		close(writerDone)
	}()
	journalDone := make(chan struct{})
	go func() {
		p.journal.Run(writeCtx, max(s.cfg.Debounce, time.Second))
		close(journalDone)
	}()
	stop = func() {
		stopWatching()
		<-managerDone
		stopWriting()
		<-writerDone
		<-journalDone
		s.saveJournal(p, shutdownIndexTimeout)
		s.saveIndex(p, shutdownIndexTimeout)
	}
	if err := p.manager.WaitForSync(ctx, s.cfg.SyncTimeout); err != nil {
		stop()
		return nil, err
	}
	s.log.Info("Informers synced", logging.Component("watcher"), logging.Op(logging.OpDiscovery), logging.Duration(time.Since(begin)))
	return stop, nil
}

// Run is the always-on mode: watch, write, reconcile every
// SNAPSHOT_INTERVAL, serve metrics and health, until SIGTERM. With
// LEADER_ELECT, only the replica holding the Lease does this; the others
// stand by, ready, and take over when its lease runs out.
func (s *Service) Run(ctx context.Context) error {
	reg, m := telemetry()
	var st status
	srv := s.serve(reg, st.ready(), st.live(s.cfg.SyncTimeout+leaderPassGrace))
	defer s.shutdownServer(srv)
	if s.cfg.EnablePprof {
		defer s.shutdownServer(s.servePprof())
	}
	if err := s.connectStore(ctx, m); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	p, err := s.build(reg, m)
	if err != nil {
		return err
	}
	st.health.Store(p.health)
	s.held = &st.held
	if !s.cfg.LeaderElect {
		st.leadingSince.Store(time.Now().UnixNano())
		st.leading.Store(true)
		p.metrics.Leader.Set(1)
		return s.lead(ctx, p, &st)
	}
	return s.elect(ctx, p, &st)
}

// status is what /readyz and /healthz report on.
type status struct {
	health       atomic.Pointer[sink.Health] // nil until the store is connected
	leading      atomic.Bool
	leadingSince atomic.Int64 // unix nanoseconds
	synced       atomic.Bool
	passed       atomic.Bool // a pass has run since this replica leads
	held         atomic.Bool // another cluster owns the prefix: waiting, writing nothing
}

// live fails for a leader that has not completed a pass within bound of
// taking the lead: it holds the Lease but backs nothing up, and a restart
// hands the Lease to another replica.
func (st *status) live(bound time.Duration) func() error {
	return func() error {
		if !st.leading.Load() || st.passed.Load() || st.held.Load() {
			return nil
		}
		if since := time.Since(time.Unix(0, st.leadingSince.Load())); since > bound {
			return fmt.Errorf("leading for %s without completing a snapshot pass", since.Round(time.Second))
		}
		return nil
	}
}

// ready: a replica is not ready until it has reached the store; then a
// standby is ready (idle), and the leader once its caches have synced and
// while the store answers.
func (st *status) ready() func() error {
	return func() error {
		h := st.health.Load()
		switch {
		case h == nil:
			return errors.New("store not reached yet")
		case !st.leading.Load():
			return nil
		case !st.synced.Load():
			return errors.New("informers not synced")
		case !h.Healthy():
			return errors.New("store unreachable at its last call")
		}
		return nil
	}
}

// lead runs the pipeline until ctx ends.
func (s *Service) lead(ctx context.Context, p *pipeline, st *status) error {
	stop, err := s.start(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st.synced.Store(true)
	defer stop()
	go s.watchPrefix(ctx, p)

	var tick <-chan time.Time
	if s.cfg.SnapshotInterval > 0 {
		t := time.NewTicker(s.cfg.SnapshotInterval)
		defer t.Stop()
		tick = t.C
	}
	reloads := s.watchConfig(ctx, p)
	for first := true; ; first = false {
		s.runPass(ctx, p, first)
		st.passed.Store(true)
		if !s.awaitPass(ctx, p.manager, p.writer.Overflowed, p.settings, tick, reloads) {
			s.log.Info("Shutting down: flushing pending writes", logging.Component("main"),
				logging.Data(map[string]any{"pending": p.writer.Pending()}))
			return nil
		}
	}
}

// triggers are what, besides the interval, makes a pass due: the caches
// (watcher.Manager).
type triggers interface {
	// NeedsPass: an informer listed objects no pass has seen.
	NeedsPass() bool
	// Listed signals each informer's completed list.
	Listed() <-chan struct{}
	// SetRules applies the rules of a new ConfigMap.
	SetRules(ctx context.Context, rules filter.Rules) error
}

// awaitPass waits until the next pass is due: the interval has passed, an
// informer has listed objects no pass has seen (a new CRD, a type now
// permitted), a new ConfigMap was applied, or the writer dropped changes
// (overflowed). It returns false when ctx ends.
func (s *Service) awaitPass(ctx context.Context, caches triggers, overflowed func() bool, settings *object.Settings, tick <-chan time.Time, reloads <-chan config.ConfigMap) bool {
	// A pass that failed before it read the caches (the store could not
	// be listed) left listed objects unsaved: try again soon.
	var retry <-chan time.Time
	if caches.NeedsPass() {
		retry = time.After(passRetryDelay)
	}
	overflow := time.NewTicker(overflowCheck)
	defer overflow.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case <-retry:
			return true
		case <-caches.Listed():
			if caches.NeedsPass() {
				return true
			}
		case cm := <-reloads:
			// Apply the new rules, then pass at once so that what is no
			// longer selected leaves the bucket now, not in an hour.
			if err := caches.SetRules(ctx, cm.Rules); err != nil {
				s.log.Warn("Discovery after reload failed; retrying later", logging.Op(logging.OpConfigReload), zap.Error(err))
			}
			settings.Set(cm.Rules.SkipInvalidResources, cm.MaxPruneFraction)
			return true
		case <-overflow.C:
			// Changes were dropped while the queue was full: a pass
			// repairs them, whatever SNAPSHOT_INTERVAL says.
			if overflowed() {
				s.log.Info("Write queue overflowed; a snapshot pass repairs the dropped changes", logging.Component("main"), logging.Op(logging.OpSnapshotStart))
				return true
			}
		}
	}
}

// leaseLock is the Lease this replica competes for: cluster-backup-{cluster}
// in LEASE_NAMESPACE (default: the pod's own namespace), held as POD_NAME.
func (s *Service) leaseLock() (*resourcelock.LeaseLock, error) {
	id := s.cfg.PodName
	if id == "" {
		id, _ = os.Hostname()
	}
	ns := s.cfg.LeaseNamespace
	if ns == "" {
		ns = "default"
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	return &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: "cluster-backup-" + s.cfg.ClusterName, Namespace: ns},
		Client:     s.clients.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}, nil
}

// elect takes part in leader election on a Lease and leads while it holds
// it. Losing the lease (not a shutdown) ends the process with an error, so
// that it restarts as a standby with a clean state.
func (s *Service) elect(ctx context.Context, p *pipeline, st *status) error {
	lock, err := s.leaseLock()
	if err != nil {
		return err
	}
	id, ns := lock.Identity(), lock.LeaseMeta.Namespace
	log := s.log.With(logging.Component("main"), logging.Op(logging.OpLeaderElection))
	d := s.cfg.LeaseDuration
	var (
		leadErr error
		led     = make(chan struct{})
		started atomic.Bool
	)
	log.Info("Standing by for leader election", logging.Data(map[string]any{"lease": ns + "/" + lock.LeaseMeta.Name, "identity": id}))
	// The election runs on a context of its own, cancelled only once the
	// leader has stopped writing: ReleaseOnCancel then hands the Lease over
	// after the flush, never during it, so two replicas never write at
	// once on a rolling update.
	electCtx, endElection := context.WithCancel(context.WithoutCancel(ctx))
	defer endElection()
	stopStandby := context.AfterFunc(ctx, func() {
		if !started.Load() {
			endElection()
		}
	})
	defer stopStandby()
	leaderelection.RunOrDie(electCtx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   d,
		RenewDeadline:   d * 2 / 3,
		RetryPeriod:     max(d/7, 500*time.Millisecond),
		ReleaseOnCancel: true,
		Name:            "cluster-backup",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				started.Store(true)
				defer close(led)
				// Whatever ends the lead (SIGTERM, a lost lease, a failed
				// takeover), the Lease is released once it has returned.
				defer endElection()
				leadErr = s.leadElected(ctx, electCtx, lctx, p, st, log, id)
			},
			OnStoppedLeading: func() {
				p.metrics.Leader.Set(0)
				log.Info("Leadership ended", logging.Data(map[string]any{"identity": id}))
			},
			OnNewLeader: func(leader string) {
				if leader != id {
					log.Info("Standing by", logging.Data(map[string]any{"leader": leader, "identity": id}))
				}
			},
		},
	})
	if started.Load() {
		<-led // the flush has finished
	}
	if leadErr != nil {
		return leadErr
	}
	if ctx.Err() == nil {
		p.metrics.Error(logging.OpLeaderElection)
		log.Error("Lost the leader lease", logging.Data(map[string]any{"identity": id}))
		return errors.New("lost the leader lease; restarting as a standby")
	}
	return nil
}

// leadElected leads while lctx (the lease) lasts and ctx (the process) is
// not cancelled. A lost lease means another replica may lead already:
// pending writes are abandoned, not flushed.
func (s *Service) leadElected(ctx, electCtx, lctx context.Context, p *pipeline, st *status, log *zap.Logger, id string) error {
	log.Info("Leading: this replica backs the cluster up", logging.Data(map[string]any{"identity": id}))
	st.leading.Store(true)
	st.leadingSince.Store(time.Now().UnixNano())
	p.metrics.Leader.Set(1)
	leadCtx, stopLeading := context.WithCancel(lctx)
	defer stopLeading()
	defer context.AfterFunc(ctx, stopLeading)()
	defer context.AfterFunc(lctx, func() {
		if ctx.Err() == nil && electCtx.Err() == nil {
			p.writer.Abandon()
		}
	})()
	err := s.lead(leadCtx, p, st)
	if err != nil {
		p.metrics.Error(logging.OpLeaderElection)
		log.Error("Leading failed; releasing the lease for another replica", zap.Error(err))
	}
	return err
}

// runPass makes one snapshot pass once the caches are complete.
func (s *Service) runPass(ctx context.Context, p *pipeline, first bool) {
	if p.writer.Paused() {
		return // another cluster owns the prefix now (watchPrefix)
	}
	if err := p.manager.WaitForSync(ctx, s.cfg.SyncTimeout); err != nil {
		return
	}
	if _, err := p.passFor(first).Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("Snapshot pass incomplete; the next pass retries", logging.Component("snapshot"), zap.Error(err))
	}
	s.saveIndex(p, 30*time.Second)
	s.savePack(ctx, p)
}

// packDue says whether a restore pack is to be written now: when none is
// stored, or when the writer wrote since the last one (seq moved on from
// packSeq) and that one is interval old. A pack found at start (at zero)
// is rewritten after the first pass that wrote.
func packDue(stored bool, seq, packSeq uint64, at, now time.Time, interval time.Duration) bool {
	switch {
	case !stored:
		return true
	case seq == packSeq:
		return false
	case at.IsZero():
		return true
	}
	return now.Sub(at) >= interval
}

// savePack gathers the stored documents into the restore pack after a
// pass, when the writer wrote since the last pack and that pack is
// RESTORE_PACK_INTERVAL old, or when there is none. Only documents the
// writer knows the store to hold go in; a restore checks each against the
// version it chose anyway. A failure costs restores their speed, nothing
// else.
func (s *Service) savePack(ctx context.Context, p *pipeline) {
	streamer, ok := s.store.(pack.Streamer)
	if !ok || s.cfg.RestorePackInterval <= 0 || ctx.Err() != nil {
		return
	}
	seq := p.ledger.Seq()
	if !packDue(p.pack.stored, seq, p.pack.seq, p.pack.at, time.Now(), s.cfg.RestorePackInterval) {
		return
	}
	layout, uid := s.layout(), p.ledger.ClusterUID()
	start := time.Now()
	// The pack is in key order (see package pack): the documents are
	// gathered (their frames are the caches' own), sorted, then written.
	type document struct {
		key   string
		meta  object.Meta
		frame pack.Frame
	}
	var docs []document
	_ = p.manager.EachStored(func(ref object.Ref, meta object.Meta, frame pack.Frame) error {
		key := layout.Key(ref)
		if p.ledger.Stores(key, meta.Fingerprint()) { // else not written yet: read from its key
			meta.ClusterUID = uid
			meta.Integrity = s.cfg.Signer.Sign(key, meta)
			docs = append(docs, document{key, meta, frame})
		}
		return nil
	})
	slices.SortFunc(docs, func(a, b document) int { return strings.Compare(a.key, b.key) })
	st, err := pack.Save(ctx, streamer, layout.PackKey(), func(add func(string, object.Meta, pack.Frame) error) error {
		for _, d := range docs {
			if err := add(d.key, d.meta, d.frame); err != nil {
				return err
			}
		}
		return nil
	})
	log := s.log.With(logging.Component("sink"), logging.Op(logging.OpObjectWrite), logging.Duration(time.Since(start)))
	if err != nil {
		if ctx.Err() == nil {
			p.metrics.Error(logging.OpObjectWrite)
			log.Warn("Cannot write the restore pack; restores read each object from its own key", zap.Error(err), logging.Data(map[string]any{"key": layout.PackKey()}))
		}
		return
	}
	p.pack.stored, p.pack.at, p.pack.seq = true, time.Now(), seq
	log.Info("Restore pack written", logging.Data(map[string]any{"key": layout.PackKey(), "documents": st.Documents, "bytes": st.Bytes}))
}

// saveJournal writes what the change journal holds at shutdown, within
// timeout; what it cannot write is left for readers to repair from a full
// listing.
func (s *Service) saveJournal(p *pipeline, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.journal.Flush(ctx); err != nil {
		s.log.Warn("Cannot write the change journal at shutdown; git-sync and the web view repair what it misses from a full listing",
			logging.Component("sink"), zap.Error(err), logging.Data(map[string]any{"entries": p.journal.Pending()}))
	}
}

// saveIndex writes the change index of a store whose listings carry no
// metadata, after a pass and at shutdown, within timeout; a failure costs
// only rewrites after the next restart.
func (s *Service) saveIndex(p *pipeline, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.ledger.SaveIndex(ctx); err != nil {
		s.log.Warn("Cannot write the change index; the next restart writes unchanged objects again", logging.Component("sink"), zap.Error(err))
	}
}

// watchConfig delivers each new valid version of the mounted ConfigMap.
// batch-size, retry-attempts and retry-delay take effect at the next start.
func (s *Service) watchConfig(ctx context.Context, p *pipeline) <-chan config.ConfigMap {
	out := make(chan config.ConfigMap)
	if s.cfg.BackupConfigDir == "" {
		return out
	}
	log := s.log.With(logging.Component("config"))
	go func() {
		err := config.Watch(ctx, s.cfg.BackupConfigDir, s.cfg.ConfigData, log,
			func(cm config.ConfigMap) {
				p.metrics.ConfigReloadSuccess.Set(1)
				p.metrics.ConfigReloadTime.SetToCurrentTime()
				p.metrics.ConfigHash.Set(float64(cm.Hash))
				select {
				case out <- cm:
				case <-ctx.Done():
				}
			},
			func(error) {
				p.metrics.Error(logging.OpConfigReload)
				p.metrics.ConfigReloadSuccess.Set(0)
			})
		if err != nil {
			p.metrics.Error(logging.OpConfigReload)
			log.Error("Cannot watch the ConfigMap; changes need a restart", logging.Op(logging.OpConfigReload), zap.Error(err))
		}
	}()
	return out
}

// Snapshot is the one-shot mode: one full pass, then exit.
func (s *Service) Snapshot(ctx context.Context) error {
	if err := s.connectStore(ctx, nil); err != nil {
		return err
	}
	p, err := s.build(telemetry())
	if err != nil {
		return err
	}
	stop, err := s.start(ctx, p)
	if err != nil {
		return err
	}
	defer stop()
	if s.progress {
		p.pass.Progress = func(done, total, written int) {
			fmt.Fprintf(s.stderr, "\rsnapshot: %d/%d objects handled, %d written", done, total, written)
			if done == total {
				fmt.Fprintln(s.stderr)
			}
		}
	}
	res, err := p.passFor(true).Run(ctx)
	fmt.Fprintln(s.stderr, res.Summary())
	if err == nil {
		s.savePack(ctx, p)
	}
	return err
}

// serve exposes /metrics, /healthz and /readyz on METRICS_ADDR.
func (s *Service) serve(reg *prometheus.Registry, ready, live func() error) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := live(); err != nil {
			http.Error(w, err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return s.listen("Metrics server", s.cfg.MetricsAddr, mux)
}

// servePprof serves Go's profiles on PPROF_ADDR (loopback by default),
// never on the metrics port that scrapers reach: a profile shows the
// process's memory and command line.
func (s *Service) servePprof() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return s.listen("Profiling server", s.cfg.PprofAddr, mux)
}

func (s *Service) listen(name, addr string, h http.Handler) *http.Server {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error(name+" failed", logging.Component("main"), zap.Error(err), logging.Data(map[string]any{"addr": addr}))
		}
	}()
	return srv
}

func (s *Service) shutdownServer(srv *http.Server) {
	// A fresh context: the run's context is already cancelled here.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
