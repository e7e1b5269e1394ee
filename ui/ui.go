// Package ui is the read-only web view of the backup (cluster-backup ui):
// the clusters of a bucket, their namespaces, types and objects, each
// object's versions with a diff between any two of them, a timeline of
// changes, and the exact restore and diff commands for what is on screen.
//
// It only reads: every route answers GET and HEAD, nothing it serves can
// write to the bucket or the cluster. Pages are rendered on the server
// from templates embedded in the binary, with the stylesheet, the one
// script and the timeline's SVG: nothing is fetched from elsewhere, so it
// works air-gapped, under a Content-Security-Policy that allows no inline
// script and nothing from another origin. A Secret's values are masked in
// every page and diff (restore.MaskedTexts), its last-applied annotation
// included.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Lister lists the current keys under a prefix that sort after a key, in
// order, without their metadata (sink.MinIO, sink.Dir).
type Lister interface {
	WalkAfter(ctx context.Context, prefix, after string, visit func(object.Stored) error) error
}

// Folders lists the folders directly under a prefix (sink.MinIO, sink.Dir):
// the bucket's clusters.
type Folders interface {
	Folders(ctx context.Context, prefix string) ([]string, error)
}

// Options configure a Server.
type Options struct {
	// Reader reads versions and documents, each checked (restore.Signed).
	Reader restore.Reader
	// Lister lists the current keys; Folders, when the store has it,
	// lists the clusters without listing their keys.
	Lister  Lister
	Folders Folders
	// Journal is where the change journal is read (nil: timelines are
	// built from version listings); Signer and AcceptUnsigned check it.
	Journal        journal.Source
	Signer         *object.Signer
	AcceptUnsigned bool
	Prefix         string // BACKUP_PREFIX
	// Command is how the commands shown are spelled: "cluster-backup" or
	// "kubectl backup".
	Command string
	// Live, when set, reads an object of the cluster of that name as the
	// service would store it; ok is false when the view cannot reach that
	// cluster, or the object does not exist there.
	Live func(ctx context.Context, cluster string, k object.Key) (body []byte, ok bool, err error)
	// Auth, when set, checks every request's bearer token
	// (UI_AUTH=kubernetes); nil serves anyone who reaches the address,
	// which must then be a loopback one.
	Auth Authorizer
	// IndexTTL is how long a cluster's list of objects is served before it
	// is listed again in the background (0: 15 s).
	IndexTTL time.Duration
	Now      func() time.Time
	Log      *zap.Logger
}

// Server serves the web view.
type Server struct {
	opts  Options
	pages map[string]*template.Template

	mu      sync.Mutex
	indexes map[string]*index // by cluster
	cache   *journalCache
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Command == "" {
		opts.Command = "cluster-backup"
	}
	if opts.IndexTTL <= 0 {
		opts.IndexTTL = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	pages := map[string]*template.Template{}
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if path.Base(name) == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", name)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(path.Base(name), ".html")] = t
	}
	return &Server{opts: opts, pages: pages, indexes: map[string]*index{}, cache: &journalCache{objects: map[string]journal.Object{}}}, nil
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") },
	"rfc3339": func(t time.Time) string {
		return t.UTC().Format(time.RFC3339Nano)
	},
	"count":      changesCount,
	"objectPath": func(cluster string, k object.Key) string { return objectPath(cluster, k) },
	"where": func(k object.Key) string {
		if k.Namespace == "" {
			return k.Name
		}
		return k.Namespace + "/" + k.Name
	},
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
	"short": func(id string) string {
		if len(id) > 12 {
			return id[:12]
		}
		return id
	},
}

// objectPath is the page of one object.
func objectPath(cluster string, k object.Key) string {
	ns := k.Namespace
	if ns == "" {
		ns = object.ClusterScope
	}
	return "/c/" + cluster + "/o/" + ns + "/" + k.Segment + "/" + k.Name
}

// Handler is the view's HTTP handler: GET and HEAD only, each answer with
// the security headers.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.FS(static))))
	mux.HandleFunc("GET /{$}", s.clusters)
	mux.HandleFunc("GET /c/{cluster}/{$}", s.cluster)
	mux.HandleFunc("GET /c/{cluster}/ns/{ns}/{$}", s.namespace)
	mux.HandleFunc("GET /c/{cluster}/o/{ns}/{segment}/{name}", s.object)
	mux.HandleFunc("GET /c/{cluster}/timeline", s.timeline)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if s.opts.Auth == nil {
		return secure(mux)
	}
	mux.HandleFunc("/login", s.login)
	return secure(s.authenticate(mux))
}

// csp allows the view's own stylesheet, script and images, and nothing
// else: no inline script or style, no other origin, no framing, no form
// posting anywhere.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead && (r.Method != http.MethodPost || r.URL.Path != "/login") {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the view is read-only", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crumb is one step of the page's breadcrumb.
type crumb struct{ Name, Href string }

// page is what every template gets.
type page struct {
	Title   string
	Crumbs  []crumb
	Command string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	s.renderBody(w, name, p)
}

// renderBody executes a page's template, the header written.
func (s *Server) renderBody(w http.ResponseWriter, name string, p page) {
	p.Command = s.opts.Command
	if err := s.pages[name].Execute(w, p); err != nil {
		s.opts.Log.Error("Cannot render a page", zap.String("page", name), zap.Error(err))
	}
}

func (s *Server) fail(w http.ResponseWriter, status int, err error) {
	s.opts.Log.Warn("Web view request failed", zap.Int("status", status), zap.Error(err))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, err.Error())
}

func (s *Server) layout(cluster string) object.Layout {
	return object.Layout{Prefix: s.opts.Prefix, Cluster: cluster}
}

// validName keeps path segments to what the layout can hold: no slashes,
// no dot segments.
func validName(v string) bool {
	return v != "" && v != "." && v != ".." && !strings.ContainsAny(v, "/\\")
}

// clusters lists the bucket's clusters.
func (s *Server) clusters(w http.ResponseWriter, r *http.Request) {
	root := strings.TrimSuffix(s.opts.Prefix, "/") + "/"
	var names []string
	if s.opts.Folders != nil {
		folders, err := s.opts.Folders.Folders(r.Context(), root)
		if err != nil {
			s.fail(w, http.StatusBadGateway, err)
			return
		}
		for _, f := range folders {
			if !strings.HasPrefix(f, "_") { // _journal
				names = append(names, f)
			}
		}
	}
	sort.Strings(names)
	s.render(w, "clusters", page{Title: "Clusters", Data: names})
}

// namespaceRow is one namespace of a cluster's overview.
type namespaceRow struct {
	Name    string
	Objects int
}

// typeRow is one type with its object count.
type typeRow struct {
	Segment string
	Objects int
}

// clusterData is the cluster overview.
type clusterData struct {
	Cluster     string
	Namespaces  []namespaceRow
	Scoped      []typeRow // cluster-scoped types
	Objects     int
	Listed      time.Time
	Query       string
	Selector    string
	SelectorErr string
	Searched    bool
	Found       []object.Key
	Truncated   bool
	Timeline    *timelineData
}

// maxFound bounds a search's answer.
const maxFound = 200

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	cluster := r.PathValue("cluster")
	if !validName(cluster) {
		s.fail(w, http.StatusNotFound, errors.New("no such cluster"))
		return
	}
	idx, err := s.index(r.Context(), cluster)
	if err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	q := r.URL.Query()
	d := clusterData{Cluster: cluster, Objects: len(idx.keys), Listed: idx.built,
		Query: strings.TrimSpace(q.Get("q")), Selector: strings.TrimSpace(q.Get("l"))}
	d.Searched = d.Query != "" || d.Selector != ""
	var selector labels.Selector
	var keyLabels []labels.Set
	if d.Selector != "" {
		if selector, err = labels.Parse(d.Selector); err != nil {
			d.SelectorErr, d.Searched = err.Error(), false
		} else if keyLabels, err = s.labelsOf(r.Context(), cluster, idx); err != nil {
			s.fail(w, http.StatusBadGateway, err)
			return
		}
	}
	byNS := map[string]int{}
	byType := map[string]int{}
	for i, k := range idx.keys {
		if k.Namespace == "" {
			byType[k.Segment]++
		} else {
			byNS[k.Namespace]++
		}
		if !d.Searched || (d.Query != "" && !strings.Contains(k.Name, d.Query)) || (selector != nil && !selector.Matches(keyLabels[i])) {
			continue
		}
		if len(d.Found) == maxFound {
			d.Truncated = true
		} else {
			d.Found = append(d.Found, k)
		}
	}
	for ns, n := range byNS {
		d.Namespaces = append(d.Namespaces, namespaceRow{ns, n})
	}
	sort.Slice(d.Namespaces, func(i, j int) bool { return d.Namespaces[i].Name < d.Namespaces[j].Name })
	for seg, n := range byType {
		d.Scoped = append(d.Scoped, typeRow{seg, n})
	}
	sort.Slice(d.Scoped, func(i, j int) bool { return d.Scoped[i].Segment < d.Scoped[j].Segment })
	d.Timeline, err = s.timelineOf(r.Context(), cluster, "", r.URL.Query().Get("range"), "")
	if err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	s.render(w, "cluster", page{Title: cluster, Crumbs: []crumb{{"Clusters", "/"}, {cluster, ""}}, Data: d})
}

// namespaceData is one namespace's page.
type namespaceData struct {
	Cluster, Namespace string
	Types              []typeObjects
	Restore, Diff      string
	Timeline           *timelineData
}

type typeObjects struct {
	Segment string
	Keys    []object.Key
}

func (s *Server) namespace(w http.ResponseWriter, r *http.Request) {
	cluster, ns := r.PathValue("cluster"), r.PathValue("ns")
	if !validName(cluster) || !validName(ns) {
		s.fail(w, http.StatusNotFound, errors.New("no such namespace"))
		return
	}
	idx, err := s.index(r.Context(), cluster)
	if err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	d := namespaceData{Cluster: cluster, Namespace: ns}
	byType := map[string][]object.Key{}
	for _, k := range idx.keys {
		if k.Namespace == ns {
			byType[k.Segment] = append(byType[k.Segment], k)
		}
	}
	for seg, keys := range byType {
		d.Types = append(d.Types, typeObjects{seg, keys})
	}
	sort.Slice(d.Types, func(i, j int) bool { return d.Types[i].Segment < d.Types[j].Segment })
	at := s.opts.Now().UTC().Format(time.RFC3339)
	d.Restore = fmt.Sprintf("%s restore -n %s --backup-cluster %s --at %s", s.opts.Command, ns, cluster, at)
	d.Diff = fmt.Sprintf("%s diff -n %s --backup-cluster %s --at %s --details", s.opts.Command, ns, cluster, at)
	if d.Timeline, err = s.timelineOf(r.Context(), cluster, ns+"/", r.URL.Query().Get("range"), ""); err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	s.render(w, "namespace", page{Title: ns, Crumbs: []crumb{{"Clusters", "/"}, {cluster, "/c/" + cluster + "/"}, {ns, ""}}, Data: d})
}
