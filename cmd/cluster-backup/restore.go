package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/filter"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/service"
	"github.com/cluster-backup/cluster-backup/watcher"
	"github.com/cluster-backup/cluster-backup/wire"
)

// restoreFlags are the flags of restore and diff.
type restoreFlags struct {
	namespaceMapping  stringList
	existing          string
	prune             bool
	dryRun            string
	parallel          int
	qps               float64
	preserveNodePorts bool
	report            string
	yes               bool
	against           string
	againstTime       string
	details           bool
	controlPlane      bool
	keepReclaim       bool
	priorities        string
	modifiers         string
}

func (f *restoreFlags) register(fs *pflag.FlagSet, name string) {
	fs.Var(&f.namespaceMapping, "namespace-mapping", "OLD:NEW: restore namespace OLD as NEW (repeatable)")
	fs.IntVar(&f.parallel, "parallel", 32, "objects read and written at once")
	fs.BoolVar(&f.preserveNodePorts, "preserve-nodeports", false, "keep the Services' node ports")
	fs.BoolVar(&f.controlPlane, "include-control-plane", false, "also write what a control plane makes and maintains for itself (skipped by default, each with its reason)")
	fs.StringVar(&f.modifiers, "resource-modifiers", "", "a file of restore-time patches in Velero's resource-modifier format (version: v1, resourceModifierRules)")
	if name == "diff" {
		fs.StringVar(&f.against, "against", "live", "what to compare the backup with: live")
		fs.StringVar(&f.againstTime, "against-time", "", "compare with the backup as it was at this time instead of the live cluster")
		fs.BoolVar(&f.details, "details", false, "print a unified diff of each differing object (Secret values masked)")
		return
	}
	fs.StringVar(&f.priorities, "priorities", "", "a YAML file of extra order rules (resources and the wave they go in), merged into the default order")
	fs.BoolVar(&f.keepReclaim, "keep-reclaim-policy", false, "keep reclaim policy Delete on PersistentVolumes another cluster wrote (default: restored as Retain)")
	fs.StringVar(&f.existing, "existing", restore.ExistingApply, "an object that exists: apply (server-side apply, fields added since stay), skip, or replace (made equal to the backup)")
	fs.BoolVar(&f.prune, "prune", false, "delete live objects of the restored types and namespaces that the backup does not hold, within the selection (-l), of what the service's rules store")
	fs.StringVar(&f.dryRun, "dry-run", "", "client (decide, send nothing) or server (send every write as a server-side dry run)")
	fs.Float64Var(&f.qps, "qps", 0, "at most this many API requests per second (0: no client-side limit)")
	fs.StringVar(&f.report, "report", "", "write a JSON report of every object to this file")
	fs.BoolVar(&f.yes, "yes", false, "do not ask before pruning")
}

// partialError is a restore in which some objects failed: exit code 3.
// partialError is a command that did part of its work: exit code 3.
type partialError struct {
	failed int
	what   string // "objects were not restored" when empty
}

func (e partialError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("%d objects were not restored", e.failed)
	}
	return fmt.Sprintf("%d %s", e.failed, e.what)
}

// errDifferent is a diff that found differences: exit code 1.
var errDifferent = errors.New("the backup and the other side differ")

// report is the --report file.
type report struct {
	Cluster       string         `json:"cluster"`
	At            time.Time      `json:"at"`
	NewestVersion time.Time      `json:"newestVersionUsed,omitzero"`
	DryRun        string         `json:"dryRun,omitempty"`
	Seconds       float64        `json:"seconds"`
	Counts        map[string]int `json:"counts"`
	// LowestConcurrency is the fewest writes the API server\'s answers let
	// the restore keep in flight (--parallel when it never pushed back).
	LowestConcurrency int               `json:"lowestConcurrency"`
	Objects           []restore.Result  `json:"objects"`
	NamespaceMoves    map[string]string `json:"namespaceMapping,omitempty"`
}

func runRestore(ctx context.Context, name string, cfg config.Config, sel *selection, fl *restoreFlags, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && fl.prune {
		return usagef("%s --prune works on namespaces and types, not on named objects (%s)", name, strings.Join(args, " "))
	}
	if len(sel.namespaces) == 0 && !sel.allNamespaces {
		return usagef("%s needs -n NAMESPACE (repeatable) or -A", name)
	}
	opts, err := fl.options(sel)
	if err != nil {
		return err
	}
	if opts.Decrypter, err = decrypter(cfg); err != nil {
		return err
	}
	start := time.Now()
	target, res, err := connectTarget(cfg, fl.qps)
	if err != nil {
		return err
	}
	if err := fl.targetOptions(ctx, name, cfg, target, res, &opts); err != nil {
		return err
	}
	reader, err := openReadStore(ctx, cfg, fl.parallel)
	if err != nil {
		return err
	}
	layout := object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}
	items, err := selectItems(ctx, reader, layout, sel, res, sel.viewTime())
	if err != nil {
		return err
	}
	if len(args) > 0 {
		if items, err = onlyNamed(items, args, res); err != nil {
			return err
		}
	}
	if n := len(items) - len(restore.Known(items)); n > 0 {
		fmt.Fprintf(stderr, "%s: warning: the store cannot say what %d objects were at %s: it keeps one version per key, or their older versions expired; they are reported unknown, never restored or pruned\n",
			name, n, sel.atTime.UTC().Format(time.RFC3339))
	}
	reader, readFrom := readThroughPack(ctx, name, reader, layout, restore.Known(items), sel.viewTime(), cfg.Signer, stderr)
	defer readFrom()
	reader = sel.signed(reader, cfg, name, stderr)
	if name == "diff" {
		return runDiff(ctx, target, reader, layout, sel, res, fl, items, opts, stdout, stderr)
	}
	if fl.prune && !fl.yes && fl.dryRun == "" {
		if err := confirm(stderr, "Prune deletes the live objects of the restored types and namespaces that the backup does not hold and that the selection and the service's rules take."); err != nil {
			return err
		}
	}
	lowest, done := watchRestore(stderr, sel.quiet, len(items), fl.parallel, &opts)
	defer done()
	results := restore.Restore(ctx, target, reader, items, opts)
	took := time.Since(start)
	done()
	fmt.Fprintf(stderr, "restore: %s\n", restore.Summary(results, took))
	if fl.report != "" {
		if err := writeReport(fl.report, cfg, sel, fl, results, took, *lowest); err != nil {
			return err
		}
	}
	if c := restore.Counts(results); c[restore.Failed]+c[restore.Unknown] > 0 {
		return partialError{failed: c[restore.Failed] + c[restore.Unknown]}
	}
	return nil
}

// watchRestore shows a restore as it goes: a progress bar on a terminal,
// and above it a line per object and each time the API server makes the
// restore slow down (lowest is the fewest writes it let through). done
// ends both; it may be called more than once.
func watchRestore(stderr io.Writer, quiet bool, total, parallel int, opts *restore.Options) (lowest *int, done func()) {
	bar := newProgress(stderr, total, "restore", quiet)
	lines := newBatchedWriter(bar, 100*time.Millisecond)
	opts.Progress = func(r restore.Result) {
		bar.Add(1)
		where := r.Resource + "/" + r.Name
		if r.Namespace != "" {
			where = r.Resource + "/" + r.Namespace + "/" + r.Name
		}
		if r.Reason != "" {
			fmt.Fprintf(lines, "%-10s %s: %s\n", r.Outcome, where, r.Reason)
		} else {
			fmt.Fprintf(lines, "%-10s %s\n", r.Outcome, where)
		}
	}
	least := parallel
	opts.Concurrency = func(limit int) {
		if limit < least {
			least = limit
			fmt.Fprintf(lines, "restore: the API server pushes back: %d writes in flight\n", limit)
		}
	}
	return &least, func() {
		lines.Close()
		bar.Done()
	}
}

// readThroughPack puts the cluster's restore pack in front of reader when
// it pays; the function returned lets the pack go and tells how many
// documents it served.
func readThroughPack(ctx context.Context, name string, reader restore.Reader, layout object.Layout, items []restore.Item, t time.Time, signer *object.Signer, stderr io.Writer) (restore.Reader, func()) {
	p, _, err := restore.WithPack(ctx, reader, layout, items, t)
	if err != nil {
		fmt.Fprintf(stderr, "%s: every object is read from its own key: %v\n", name, err)
	}
	if p == nil {
		return reader, func() {}
	}
	p.Signer = signer
	if name == "restore" {
		// A restore asks by waves, not in the pack's key order: the pack
		// is read at once rather than held open while it runs.
		p.ReadAll()
	}
	return p, func() {
		_ = p.Close()
		if err := p.Damage(); err != nil {
			fmt.Fprintf(stderr, "%s: %s: %v; the objects it does not hold are read from their own keys\n", name, layout.PackKey(), err)
		}
		fromPack, fromKeys := p.Read()
		fmt.Fprintf(stderr, "%s: %d documents read from the restore pack of %s, %d from their own keys\n",
			name, fromPack, p.Version.Time.UTC().Format(time.RFC3339), fromKeys)
	}
}

// connectTarget reaches the cluster to restore into: no client-side rate
// limit unless qps is set. The target and the resolver of resource names
// share one discovery cache.
func connectTarget(cfg config.Config, qps float64) (restore.Target, resolver, error) {
	kube, err := service.RestConfig(cfg, version)
	if err != nil {
		return restore.Target{}, resolver{}, fatalError{err}
	}
	kube.QPS, kube.Burst = -1, 0
	if qps > 0 {
		// One bucket for every client made from kube, so that together
		// they never exceed --qps.
		kube.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(float32(qps), max(1, int(qps)))
	}
	if cfg.Kube.Timeout == "" { // else --request-timeout's
		kube.Timeout = time.Minute
	}
	dc, err := discovery.NewDiscoveryClientForConfig(kube)
	if err != nil {
		return restore.Target{}, resolver{}, fatalError{err}
	}
	if _, err := dc.ServerVersion(); err != nil {
		return restore.Target{}, resolver{}, fatalError{fmt.Errorf("reach API server %s: %w", kube.Host, err)}
	}
	dyn, err := dynamic.NewForConfig(kube)
	if err != nil {
		return restore.Target{}, resolver{}, fatalError{err}
	}
	meta, err := metadata.NewForConfig(kube)
	if err != nil {
		return restore.Target{}, resolver{}, fatalError{err}
	}
	lists, err := wire.NewClient(kube)
	if err != nil {
		return restore.Target{}, resolver{}, fatalError{err}
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cached)
	return restore.Target{Dynamic: dyn, Metadata: meta, Lists: lists, Mapper: mapper}, resolverFor(mapper, cached), nil
}

// targetOptions are the options that depend on the target cluster: its
// identity, the resource names of --priorities, and what the service's
// rules would store of it (for prune and the extras diff shows).
func (f *restoreFlags) targetOptions(ctx context.Context, name string, cfg config.Config, target restore.Target, res resolver, opts *restore.Options) error {
	var err error
	if f.priorities != "" {
		if opts.Waves, err = readPriorities(f.priorities, res); err != nil {
			return err
		}
	}
	if opts.ClusterUID, err = target.ClusterUID(ctx); err != nil {
		return fatalError{fmt.Errorf("read the target cluster's identity: %w", err)}
	}
	if f.prune || name == "diff" {
		if opts.Stored, err = storedByRules(cfg.Rules, res.disc); err != nil {
			return fatalError{err}
		}
	}
	return nil
}

// priorityRule is one rule of a --priorities file.
type priorityRule struct {
	Resources []string `json:"resources"`
	Wave      string   `json:"wave"`
}

// readPriorities reads a --priorities file: a list of rules, each putting
// resources (names as in the filtering keys) into a wave of the default
// order. Resources it does not name keep their place; CRDs always come
// first.
func readPriorities(path string, res resolver) (map[string]restore.Wave, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("invalid --priorities %q: %v", path, err)
	}
	var rules []priorityRule
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		return nil, usagef("invalid --priorities %q: want a list of {resources: [...], wave: ...}: %v", path, err)
	}
	out := map[string]restore.Wave{}
	for i, r := range rules {
		wave, err := restore.ParseWave(r.Wave)
		if err != nil {
			return nil, usagef("invalid --priorities %q: rule %d: %v", path, i+1, err)
		}
		if len(r.Resources) == 0 {
			return nil, usagef("invalid --priorities %q: rule %d names no resources", path, i+1)
		}
		for _, name := range r.Resources {
			seg := res.segment(name)
			if seg == "customresourcedefinitions.apiextensions.k8s.io" {
				return nil, usagef("invalid --priorities %q: rule %d: %q: CRDs always come first", path, i+1, name)
			}
			out[seg] = wave
		}
	}
	return out, nil
}

// storedByRules says whether the service would store a live object under
// rules (the ConfigMap of BACKUP_CONFIG_DIR, or the defaults): its type
// selected, its namespace and labels and annotations taken, its document
// within max-resource-size. A type the cluster does not serve stores
// nothing.
func storedByRules(rules filter.Rules, disc discovery.DiscoveryInterface) (func(*unstructured.Unstructured) bool, error) {
	all, openshift, err := watcher.Resources(disc)
	if err != nil {
		return nil, err
	}
	selected, _ := rules.SelectResources(all, watcher.OpenShift(rules.OpenShiftMode, openshift))
	byKind := map[schema.GroupKind]filter.Resource{}
	for _, r := range selected {
		byKind[schema.GroupKind{Group: r.Group, Kind: r.Kind}] = r
	}
	enc := watcher.EncodeOptions(rules, nil)
	enc.Validate = false
	return func(obj *unstructured.Unstructured) bool {
		r, ok := byKind[obj.GroupVersionKind().GroupKind()]
		if !ok {
			return false
		}
		if keep, _ := rules.KeepObject(r, obj, true, nil); !keep {
			return false
		}
		if rules.MaxResourceSize > 0 {
			if _, err := enc.Encode(obj); err != nil {
				return false
			}
		}
		return true
	}, nil
}

// options checks the flags and turns them into restore options.
func (f *restoreFlags) options(sel *selection) (restore.Options, error) {
	opts := restore.Options{
		Existing: f.existing, Prune: f.prune, DryRun: f.dryRun, Parallel: f.parallel,
		PreserveNodePorts: f.preserveNodePorts, NamespaceMapping: map[string]string{},
		IncludeControlPlane: f.controlPlane, KeepReclaimPolicy: f.keepReclaim,
	}
	switch f.existing {
	case "", restore.ExistingApply, restore.ExistingSkip, restore.ExistingReplace:
	default:
		return opts, usagef("invalid --existing %q: want apply, skip or replace", f.existing)
	}
	switch f.dryRun {
	case "", restore.DryRunClient, restore.DryRunServer:
	default:
		return opts, usagef("invalid --dry-run %q: want client or server", f.dryRun)
	}
	if f.parallel < 1 {
		return opts, usagef("invalid --parallel %d: want at least 1", f.parallel)
	}
	for _, m := range f.namespaceMapping {
		from, to, ok := strings.Cut(m, ":")
		if !ok || from == "" || to == "" {
			return opts, usagef("invalid --namespace-mapping %q: want OLD:NEW", m)
		}
		opts.NamespaceMapping[from] = to
	}
	if f.modifiers != "" {
		b, err := os.ReadFile(f.modifiers)
		if err != nil {
			return opts, usagef("invalid --resource-modifiers %q: %v", f.modifiers, err)
		}
		if opts.Modifiers, err = restore.LoadModifiers(b); err != nil {
			return opts, usagef("invalid --resource-modifiers %q: %v", f.modifiers, err)
		}
	}
	if sel.labelSelector != "" {
		s, err := labels.Parse(sel.labelSelector)
		if err != nil {
			return opts, usagef("invalid -l %q: %v", sel.labelSelector, err)
		}
		opts.Selector = s
	}
	return opts, nil
}

// selectItems lists the selected part of the backup at t.
func selectItems(ctx context.Context, reader restore.Reader, layout object.Layout, sel *selection, res resolver, t time.Time) ([]restore.Item, error) {
	var namespaces []string
	if !sel.allNamespaces {
		namespaces = sel.namespaces
	}
	items, err := restore.View(ctx, reader, layout, namespaces, t)
	if err != nil {
		return nil, fatalError{err}
	}
	chosen := map[string]bool{}
	for _, ns := range namespaces {
		chosen[ns] = true
	}
	filter := newItemFilter(sel, res)
	var selected []restore.Item
	for _, it := range items {
		if !filter.keep(it.Key) {
			continue
		}
		// With -n, of the cluster-scoped objects only the chosen
		// Namespaces themselves.
		if len(namespaces) > 0 && it.Namespace == "" && (it.Segment != "namespaces" || !chosen[it.Name]) {
			continue
		}
		selected = append(selected, it)
	}
	return selected, nil
}

// onlyNamed keeps the items args name (RESOURCE/NAME, as kubectl spells
// them), and the Namespaces they are in, which a restore creates first
// when they are missing. A name the selection does not hold is an error.
func onlyNamed(items []restore.Item, args []string, res resolver) ([]restore.Item, error) {
	type named struct{ segment, name string }
	want := map[named]bool{}
	for _, a := range args {
		r, n, ok := strings.Cut(a, "/")
		if !ok || r == "" || n == "" {
			return nil, usagef("want RESOURCE/NAME, got %q", a)
		}
		want[named{res.segment(r), n}] = false
	}
	namespaces := map[string]bool{}
	var out []restore.Item
	for _, it := range items {
		if _, ok := want[named{it.Segment, it.Name}]; ok {
			want[named{it.Segment, it.Name}] = true
			out = append(out, it)
			namespaces[it.Namespace] = true
		}
	}
	for _, it := range items {
		if it.Namespace == "" && it.Segment == "namespaces" && namespaces[it.Name] {
			out = append(out, it)
		}
	}
	for n, found := range want {
		if !found {
			return nil, fmt.Errorf("%s/%s: %w in the selected namespaces at that time", n.segment, n.name, errNotFound)
		}
	}
	return out, nil
}

func runDiff(ctx context.Context, target restore.Target, reader restore.Reader, layout object.Layout, sel *selection, res resolver, fl *restoreFlags,
	backup []restore.Item, opts restore.Options, stdout, stderr io.Writer) error {
	var diffs []restore.Difference
	var failed []restore.Result
	bar := newProgress(stderr, len(backup), "diff", sel.quiet)
	opts.Tick = func() { bar.Add(1) }
	defer bar.Done()
	if fl.againstTime != "" {
		t2, err := parseTime(fl.againstTime, time.Now())
		if err != nil {
			return err
		}
		other, err := selectItems(ctx, reader, layout, sel, res, t2)
		if err != nil {
			return err
		}
		diffs, failed = restore.DiffBackups(ctx, reader, other, backup, fl.parallel, opts)
	} else {
		if fl.against != "live" {
			return usagef("invalid --against %q: want live (or --against-time TIME)", fl.against)
		}
		diffs, failed = restore.DiffLive(ctx, target, reader, backup, fl.parallel, opts)
	}
	bar.Done()
	for _, d := range diffs {
		where := d.Resource + "/" + d.Name
		if d.Namespace != "" {
			where = d.Resource + "/" + d.Namespace + "/" + d.Name
		}
		fmt.Fprintf(stdout, "%s %s\n", d.Change, where)
		if fl.details {
			fmt.Fprintln(stdout, d.Details())
		}
	}
	for _, f := range failed {
		fmt.Fprintf(stderr, "failed %s/%s/%s: %s\n", f.Resource, f.Namespace, f.Name, f.Reason)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d objects could not be compared", len(failed))
	}
	if len(diffs) > 0 {
		return errDifferent
	}
	return nil
}

// confirm asks on the terminal; without one, --yes is required.
func confirm(stderr io.Writer, what string) error {
	if !isTerminal(os.Stdin) {
		return usagef("%s Confirm with --yes", what)
	}
	fmt.Fprintf(stderr, "%s Go on? [y/N] ", what)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return usagef("not confirmed")
	}
	return nil
}

func writeReport(path string, cfg config.Config, sel *selection, fl *restoreFlags, results []restore.Result, took time.Duration, lowest int) error {
	rep := report{Cluster: cfg.ClusterName, At: sel.atTime.UTC(), DryRun: fl.dryRun, Seconds: took.Seconds(), Counts: restore.Counts(results), Objects: results, LowestConcurrency: lowest}
	if rep.Objects == nil {
		rep.Objects = []restore.Result{}
	}
	for _, r := range results {
		if r.VersionTime.After(rep.NewestVersion) {
			rep.NewestVersion = r.VersionTime
		}
	}
	if len(fl.namespaceMapping) > 0 {
		rep.NamespaceMoves = map[string]string{}
		for _, m := range fl.namespaceMapping {
			from, to, _ := strings.Cut(m, ":")
			rep.NamespaceMoves[from] = to
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// batchedWriter passes lines written from many goroutines on in batches,
// at least every interval: a restore reports thousands of objects a second,
// one write each would cost more than the line.
type batchedWriter struct {
	mu   sync.Mutex
	buf  *bufio.Writer
	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

func newBatchedWriter(w io.Writer, interval time.Duration) *batchedWriter {
	b := &batchedWriter{buf: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{})}
	b.done.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-tick.C:
				b.mu.Lock()
				_ = b.buf.Flush()
				b.mu.Unlock()
			}
		}
	})
	return b
}

func (b *batchedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Close writes what is left; it may be called more than once.
func (b *batchedWriter) Close() {
	b.once.Do(func() {
		close(b.stop)
		b.done.Wait()
		b.mu.Lock()
		_ = b.buf.Flush()
		b.mu.Unlock()
	})
}
