package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/cluster-backup/cluster-backup/config"
	"github.com/cluster-backup/cluster-backup/encode"
	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/service"
	"github.com/cluster-backup/cluster-backup/sink"
)

// Exit codes of the browsing and restore commands.
const (
	exitDifferent = 1 // diff: the two sides differ; show, history: not found
	exitPartial   = 3 // restore: some objects failed
	exitFatal     = 4 // the cluster, the store or the credentials cannot be reached
)

// usageError is a bad argument: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// fatalError is a store or cluster that cannot be reached: exit code 4.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// stringList is a repeatable flag that also takes comma-separated values.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Type() string   { return "strings" }
func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// selection holds the flags that choose what part of the backup a command
// looks at.
type selection struct {
	cluster           string
	at                string
	namespaces        stringList
	allNamespaces     bool
	excludeNamespaces stringList
	includeResources  stringList
	excludeResources  stringList
	labelSelector     string
	output            string
	identity          string
	acceptUnsigned    bool
	quiet             bool   // no progress bar
	clusters          bool   // ls --clusters
	contextNamespace  string // the kubeconfig context's namespace, when it names one

	atTime time.Time
}

func (s *selection) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.cluster, "backup-cluster", "", "the backed-up cluster to read (default CLUSTER_NAME)")
	fs.StringVar(&s.at, "at", "", "the backup as it was at this time: RFC 3339 (2026-12-02T10:00:00Z) or a duration ago (2h, 3d); default now")
	fs.VarP(&s.namespaces, "namespace", "n", "namespace (repeatable, or comma-separated); show and history default to the kubeconfig context's")
	fs.BoolVarP(&s.allNamespaces, "all-namespaces", "A", false, "every namespace and the cluster-scoped objects")
	fs.Var(&s.excludeNamespaces, "exclude-namespace", "namespace to leave out (repeatable)")
	fs.Var(&s.includeResources, "include-resources", "resources to include, as in the filtering ConfigMap (comma-separated)")
	fs.Var(&s.excludeResources, "exclude-resources", "resources to leave out (comma-separated)")
	fs.StringVarP(&s.labelSelector, "selector", "l", "", "label selector over the backed-up objects")
	fs.StringVarP(&s.output, "output", "o", "table", "output: table, wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=SPEC")
	fs.StringVar(&s.identity, "identity", "", "age identity file to decrypt Secrets with (default AGE_IDENTITY_FILE)")
	fs.BoolVar(&s.acceptUnsigned, "accept-unsigned", false, "read documents stored without an integrity tag (written before INTEGRITY_KEY existed)")
}

// signed puts the integrity check of cfg's key in front of r (see
// restore.Signed); without a key it says on stderr, once, that nothing
// authenticates what is read.
func (s *selection) signed(r restore.Reader, cfg config.Config, name string, stderr io.Writer) restore.Reader {
	if cfg.Signer == nil && stderr != nil {
		fmt.Fprintf(stderr, "%s: warning: INTEGRITY_KEY is not set: whoever can write the bucket can forge what is read\n", name)
	}
	return restore.Signed{Reader: r, Signer: cfg.Signer, AcceptUnsigned: s.acceptUnsigned}
}

func (s *selection) overrides() map[string]string {
	out := map[string]string{}
	if s.cluster != "" {
		out["CLUSTER_NAME"] = s.cluster
	}
	if s.identity != "" {
		out["AGE_IDENTITY_FILE"] = s.identity
	}
	return out
}

// decrypter loads AGE_IDENTITY_FILE; nil when none is given.
func decrypter(cfg config.Config) (*encrypt.Decrypter, error) {
	if cfg.AgeIdentityFile == "" {
		return nil, nil
	}
	d, err := encrypt.LoadIdentities(cfg.AgeIdentityFile)
	if err != nil {
		return nil, usagef("invalid --identity (AGE_IDENTITY_FILE) %q: %v", cfg.AgeIdentityFile, err)
	}
	return d, nil
}

// viewTime is the time the backup is viewed at: --at, or without it every
// version written so far, whatever the store's clock says (a store whose
// clock runs ahead of this machine's must not hide its newest versions).
func (s *selection) viewTime() time.Time {
	if s.at == "" {
		return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return s.atTime
}

// parseTime reads --at: RFC 3339, or a duration ago (with d for days).
func parseTime(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d := v
	days := 0
	if i := strings.Index(d, "d"); i > 0 {
		n, err := strconv.Atoi(d[:i])
		if err != nil {
			return time.Time{}, usagef("invalid --at %q: want RFC 3339 or a duration like 2h or 3d", v)
		}
		days, d = n, d[i+1:]
	}
	dur := time.Duration(0)
	if d != "" {
		var err error
		if dur, err = time.ParseDuration(d); err != nil {
			return time.Time{}, usagef("invalid --at %q: want RFC 3339 or a duration like 2h or 3d", v)
		}
	}
	return now.Add(-(time.Duration(days)*24*time.Hour + dur)), nil
}

// resolver maps resource names as users type them (deploy, configmaps,
// widgets.example.com) to the storage layout's segments, and segments back
// to types. It asks the cluster's discovery when it can be reached;
// otherwise names are taken as the plural (or plural.group) they spell.
type resolver struct {
	mapper meta.RESTMapper // nil without a cluster
	reset  func()
	disc   discovery.DiscoveryInterface
}

func newResolver(kube *rest.Config) resolver {
	if kube == nil {
		return resolver{}
	}
	dc, err := discovery.NewDiscoveryClientForConfig(kube)
	if err != nil {
		return resolver{}
	}
	cached := memory.NewMemCacheClient(dc)
	return resolverFor(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached)
}

// resolverFor answers from mapper, which reads discovery through cached,
// so that a restore's resolver and target ask discovery once.
func resolverFor(mapper *restmapper.DeferredDiscoveryRESTMapper, cached discovery.CachedDiscoveryInterface) resolver {
	return resolver{
		mapper: restmapper.NewShortcutExpander(mapper, cached, func(string) {}),
		reset:  mapper.Reset,
		disc:   cached,
	}
}

// segment is the storage segment of a resource name.
func (r resolver) segment(name string) string {
	name = strings.ToLower(name)
	if r.mapper != nil {
		gvr, gr := schema.ParseResourceArg(name)
		if gvr != nil {
			if found, err := r.mapper.ResourceFor(*gvr); err == nil {
				return object.Segment(found.Group, found.Resource)
			}
		}
		if found, err := r.mapper.ResourceFor(gr.WithVersion("")); err == nil {
			return object.Segment(found.Group, found.Resource)
		}
	}
	return name
}

// namespaced reports whether a segment's type is namespaced, when known.
func (r resolver) namespaced(segment string) (namespaced, known bool) {
	if r.mapper == nil {
		return false, false
	}
	resource, group, _ := strings.Cut(segment, ".")
	gvk, err := r.mapper.KindFor(schema.GroupVersionResource{Group: group, Resource: resource})
	if err != nil {
		return false, false
	}
	m, err := r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return false, false
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace, true
}

// browser is what ls, show and history need: the store and the layout.
type browser struct {
	cfg    config.Config
	dec    *encrypt.Decrypter
	reader restore.Reader
	layout object.Layout
	res    resolver
	stdout io.Writer
	stderr io.Writer // progress only
}

// openBrowser opens the store read-only; the cluster is asked for resource
// names only if KUBECONFIG (or an in-cluster identity) reaches it.
func openBrowser(ctx context.Context, cfg config.Config, sel *selection, name string, stdout, stderr io.Writer) (*browser, error) {
	store, err := openReadStore(ctx, cfg, readConnections)
	if err != nil {
		return nil, err
	}
	progressOut := stderr
	if name == "ls" {
		stderr = nil // reads no document
	}
	store = sel.signed(store, cfg, name, stderr)
	dec, err := decrypter(cfg)
	if err != nil {
		return nil, err
	}
	b := &browser{cfg: cfg, dec: dec, reader: store, layout: object.Layout{Prefix: cfg.BackupPrefix, Cluster: cfg.ClusterName}, stdout: stdout, stderr: progressOut}
	if kube, err := service.RestConfig(cfg, version); err == nil {
		if cfg.Kube.Timeout == "" { // else --request-timeout's
			kube.Timeout = 5 * time.Second
		}
		if _, err := discovery.NewDiscoveryClientForConfigOrDie(kube).ServerVersion(); err == nil {
			b.res = newResolver(kube)
		}
	}
	return b, nil
}

// openReadStore opens the configured store without creating anything,
// with connections kept open for as many requests in flight.
func openReadStore(ctx context.Context, cfg config.Config, connections int) (restore.Reader, error) {
	if cfg.MinIOEndpoint == "" {
		d, err := sink.NewDir(cfg.BackupDir)
		if err != nil {
			return nil, fatalError{err}
		}
		return d, nil
	}
	opts := service.MinIOOptions(cfg)
	opts.Connections, opts.ReadOnly, opts.MaxRetries = max(readConnections, connections), true, 3
	m, err := sink.NewMinIO(ctx, opts, zap.NewNop())
	if err != nil {
		return nil, fatalError{err}
	}
	return m, nil
}

// readConnections is the fewest connections to the store the commands
// keep open: the view lists that many prefixes at once.
const readConnections = 32

// entry is one line of ls.
type entry struct {
	Key       string    `json:"key"`
	Resource  string    `json:"resource"`
	Namespace string    `json:"namespace,omitempty"`
	Name      string    `json:"name"`
	VersionID string    `json:"versionId,omitempty"`
	Time      time.Time `json:"time"`
	Size      int64     `json:"size"`
}

// ls prints what the backup held at --at.
func (b *browser) ls(ctx context.Context, sel *selection, args []string) error {
	var only, onlyName string
	if len(args) > 1 {
		return usagef("ls takes at most one RESOURCE[/NAME], got %q", strings.Join(args, " "))
	}
	if len(args) == 1 {
		res, name, _ := strings.Cut(args[0], "/")
		only, onlyName = b.res.segment(res), name
	}
	var namespaces []string
	if !sel.allNamespaces {
		namespaces = sel.namespaces
	}
	listing := newProgress(b.stderr, -1, "ls: listing the versions", sel.quiet)
	items, err := restore.View(ctx, b.reader, b.layout, namespaces, sel.viewTime())
	listing.Done()
	if err != nil {
		return fatalError{err}
	}
	filter := newItemFilter(sel, b.res)
	var out []entry
	for _, it := range items {
		if (only != "" && it.Segment != only) || (onlyName != "" && it.Name != onlyName) || !filter.keep(it.Key) {
			continue
		}
		if len(namespaces) > 0 && it.Namespace == "" && it.Segment != "namespaces" {
			continue // the cluster-scoped folder is listed for the Namespace objects
		}
		out = append(out, entry{Key: it.Version.Key, Resource: it.Segment, Namespace: it.Namespace, Name: it.Name,
			VersionID: it.Version.ID, Time: it.Version.Time, Size: it.Version.Size})
	}
	return printEntries(b.stdout, sel.output, out)
}

func printEntries(w io.Writer, format string, entries []entry) error {
	return printList(w, format, entries, func(e entry) string { return e.Resource + "/" + e.Name },
		func(tw io.Writer, wide bool) {
			if wide {
				fmt.Fprintln(tw, "NAMESPACE\tRESOURCE\tNAME\tVERSION TIME\tSIZE\tVERSION ID\tKEY")
			} else {
				fmt.Fprintln(tw, "NAMESPACE\tRESOURCE\tNAME\tVERSION TIME\tSIZE")
			}
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d", e.Namespace, e.Resource, e.Name, e.Time.UTC().Format(time.RFC3339), e.Size)
				if wide {
					fmt.Fprintf(tw, "\t%s\t%s", e.VersionID, e.Key)
				}
				fmt.Fprintln(tw)
			}
		})
}

// itemFilter applies --include-resources, --exclude-resources and
// --exclude-namespace to stored keys.
type itemFilter struct {
	include, exclude map[string]bool
	excludeNS        map[string]bool
}

func newItemFilter(sel *selection, res resolver) itemFilter {
	f := itemFilter{include: map[string]bool{}, exclude: map[string]bool{}, excludeNS: map[string]bool{}}
	for _, r := range sel.includeResources {
		f.include[res.segment(r)] = true
	}
	for _, r := range sel.excludeResources {
		f.exclude[res.segment(r)] = true
	}
	for _, ns := range sel.excludeNamespaces {
		f.excludeNS[ns] = true
	}
	return f
}

func (f itemFilter) keep(k object.Key) bool {
	if f.excludeNS[k.Namespace] || (k.Segment == "namespaces" && f.excludeNS[k.Name]) {
		return false
	}
	if len(f.include) > 0 && !f.include[k.Segment] {
		return false
	}
	return !f.exclude[k.Segment]
}

// target parses RESOURCE/NAME and finds its key: in the namespace given,
// else where its type's scope says, else cluster-scoped or in "default",
// whichever the backup holds.
func (b *browser) target(ctx context.Context, sel *selection, arg string) (string, error) {
	res, name, ok := strings.Cut(arg, "/")
	if !ok || res == "" || name == "" {
		return "", usagef("want RESOURCE/NAME, got %q", arg)
	}
	seg := b.res.segment(res)
	key := func(ns string) string {
		if ns == "" {
			ns = object.ClusterScope
		}
		return b.layout.Root() + ns + "/" + seg + "/" + name + ".yaml"
	}
	if len(sel.namespaces) > 0 {
		return key(sel.namespaces[0]), nil
	}
	defaultNS := "default"
	if sel.contextNamespace != "" {
		defaultNS = sel.contextNamespace
	}
	if namespaced, known := b.res.namespaced(seg); known {
		if namespaced {
			return key(defaultNS), nil
		}
		return key(""), nil
	}
	for _, ns := range []string{"", defaultNS} {
		versions, err := restore.History(ctx, b.reader, key(ns), time.Time{}, time.Time{})
		if err != nil {
			return "", fatalError{err}
		}
		if len(versions) > 0 {
			return key(ns), nil
		}
	}
	return key("default"), nil
}

// errNotFound is an object the backup does not hold: exit code 1.
var errNotFound = errors.New("not in the backup")

// show prints one stored document, verified against its SHA-256.
func (b *browser) show(ctx context.Context, sel *selection, args []string, versionID string) error {
	if len(args) != 1 {
		return usagef("show takes one RESOURCE/NAME")
	}
	key, err := b.target(ctx, sel, args[0])
	if err != nil {
		return err
	}
	if versionID == "" {
		versions, err := restore.History(ctx, b.reader, key, time.Time{}, time.Time{})
		if err != nil {
			return fatalError{err}
		}
		inForce := restore.At(versions, sel.viewTime())
		if len(inForce) == 0 {
			return fmt.Errorf("%s at %s: %w", key, sel.atTime.UTC().Format(time.RFC3339), errNotFound)
		}
		versionID = inForce[0].ID
	}
	body, _, err := restore.Read(ctx, b.reader, key, versionID)
	if errors.Is(err, sink.ErrNotFound) {
		return fmt.Errorf("%s: %w", key, errNotFound)
	}
	if err != nil {
		return err
	}
	if err := b.believed(key, body); err != nil {
		return err
	}
	if body, err = b.readable(body); errors.Is(err, encrypt.ErrNoIdentity) {
		return usagef("%s: %v", key, err)
	} else if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	_, err = b.stdout.Write(body)
	return err
}

// believed refuses a document that is not the object its key names, as
// restore and diff do (restore.CheckKey); one that does not decode is
// shown as stored.
func (b *browser) believed(key string, body []byte) error {
	k, ok := b.layout.Parse(key)
	if !ok {
		return nil
	}
	obj, err := restore.Decode(body)
	if err != nil {
		return nil //nolint:nilerr // not an object: shown as stored
	}
	return restore.CheckKey(obj, k, "")
}

// readable is a stored document with its values decrypted, or as stored
// when none is encrypted.
func (b *browser) readable(body []byte) ([]byte, error) {
	if !bytes.Contains(body, []byte(encrypt.Annotation)) {
		return body, nil
	}
	obj, err := restore.Decode(body)
	if err != nil || !encrypt.Encrypted(obj.Object) {
		return body, nil //nolint:nilerr // not an encrypted document after all: shown as stored
	}
	if err := b.dec.Decrypt(obj.Object); err != nil {
		return nil, err
	}
	enc, err := encode.Options{IncludeManagedFields: true, IncludeStatus: true}.Encode(obj)
	return enc.Body, err
}

// patchTexts are what history -p compares for two versions (older is nil
// for the first): the decrypted documents, or the stored ones without an
// identity, with a Secret's values masked as diff masks them.
func (b *browser) patchTexts(older, newer []byte) (string, string) {
	text := func(body []byte) []byte {
		if plain, err := b.readable(body); err == nil {
			return plain
		}
		return body
	}
	return restore.MaskedTexts(text(older), text(newer))
}

// history prints every version of one object, newest first, and with
// patch the diff each made.
func (b *browser) history(ctx context.Context, sel *selection, args []string, since, until time.Time, patch bool) error {
	if len(args) != 1 {
		return usagef("history takes one RESOURCE/NAME")
	}
	key, err := b.target(ctx, sel, args[0])
	if err != nil {
		return err
	}
	versions, err := restore.History(ctx, b.reader, key, since, until)
	if err != nil {
		return fatalError{err}
	}
	if len(versions) == 0 {
		return fmt.Errorf("%s: %w", key, errNotFound)
	}
	items := make([]restore.Item, 0, len(versions))
	for _, v := range versions {
		if !v.DeleteMarker {
			items = append(items, restore.Item{Version: v})
		}
	}
	bodies := map[string]restore.Fetched{}
	for _, f := range restore.Fetch(ctx, b.reader, items, 8) {
		bodies[f.Version.ID] = f
	}
	// A version that is not this object is listed as refused and not
	// compared.
	refusals := map[string]error{}
	for id, f := range bodies {
		if err := b.believed(key, f.Body); f.Err == nil && err != nil {
			refusals[id] = err
			f.Body = nil
			bodies[id] = f
		}
	}
	for i, v := range versions {
		f, refused := bodies[v.ID], refusals[v.ID]
		switch {
		case v.DeleteMarker:
			fmt.Fprintf(b.stdout, "version %s  %s  deleted\n", v.ID, v.Time.UTC().Format(time.RFC3339))
		case f.Err != nil:
			fmt.Fprintf(b.stdout, "version %s  %s  unreadable: %v\n", v.ID, v.Time.UTC().Format(time.RFC3339), f.Err)
		case refused != nil:
			fmt.Fprintf(b.stdout, "version %s  %s  refused: %v\n", v.ID, v.Time.UTC().Format(time.RFC3339), refused)
		default:
			fmt.Fprintf(b.stdout, "version %s  %s  resourceVersion %s\n", v.ID, v.Time.UTC().Format(time.RFC3339), f.Meta.ResourceVersion)
		}
		if !patch {
			continue
		}
		var olderBody []byte
		if i+1 < len(versions) {
			olderBody = bodies[versions[i+1].ID].Body
		}
		older, newer := b.patchTexts(olderBody, f.Body)
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(older), B: difflib.SplitLines(newer),
			FromFile: "a/" + key, ToFile: "b/" + key, Context: 3,
		})
		fmt.Fprintln(b.stdout, diff)
	}
	return nil
}
