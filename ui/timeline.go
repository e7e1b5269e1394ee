package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
)

// span is a timeline's range and the width of its bars.
type span struct {
	Name string
	Last time.Duration
	Step time.Duration
	Per  string // one bar per ...
}

var spans = []span{
	{"1h", time.Hour, time.Minute, "minute"},
	{"6h", 6 * time.Hour, 5 * time.Minute, "5 minutes"},
	{"24h", 24 * time.Hour, time.Hour, "hour"},
	{"7d", 7 * 24 * time.Hour, 6 * time.Hour, "6 hours"},
	{"30d", 30 * 24 * time.Hour, 24 * time.Hour, "day"},
}

func spanNamed(name string) span {
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	return spans[2]
}

// changeRow is one change of a timeline.
type changeRow struct {
	Time    time.Time
	Op      string
	Key     object.Key
	Manager string
	Href    string
}

// bar is one bar of a timeline: the changes in [Start, Start+step).
type bar struct {
	Start    time.Time
	Count    int
	Href     string
	Label    string
	X, Y, H  int
	Selected bool
}

// timelineData is a timeline of one scope: the cluster (""), a namespace
// ("ns/") or one object (its key below the cluster's root).
type timelineData struct {
	Cluster, Scope, ScopeName string
	Span                      span
	Spans                     []span
	From, To                  time.Time
	Bars                      []bar
	Total                     int
	Width                     int
	Source                    string // "journal", "versions", or "journal and versions"
	Selected                  *bar
	Changes                   []changeRow
	// Restore and Diff are the commands that bring a namespace (or a type
	// of it) back as it was at the end of the chosen bar.
	Restore, Diff string
	More          int // changes of the selected bar not listed
	Href          string
}

// barWidth and chartHeight are the SVG's units.
const (
	barWidth    = 12
	chartHeight = 100
	maxListed   = 500
)

// timelineOf counts the changes of scope over the span named rng, ending
// now; base is unused by the counting and kept for the links.
func (s *Server) timelineOf(ctx context.Context, cluster, scope, rng, _ string) (*timelineData, error) {
	sp := spanNamed(rng)
	now := s.opts.Now().UTC()
	to := now.Truncate(sp.Step).Add(sp.Step)
	from := to.Add(-sp.Last)
	changes, source, err := s.changes(ctx, cluster, scope, from, to)
	if err != nil {
		return nil, err
	}
	d := &timelineData{Cluster: cluster, Scope: scope, ScopeName: scopeName(cluster, scope), Span: sp, Spans: spans, From: from, To: to, Source: source}
	n := int(sp.Last / sp.Step)
	counts := make([]int, n)
	for _, c := range changes {
		if i := int(c.Time.Sub(from) / sp.Step); i >= 0 && i < n {
			counts[i]++
			d.Total++
		}
	}
	top := 1
	for _, c := range counts {
		top = max(top, c)
	}
	d.Width = n * barWidth
	d.Href = "/c/" + cluster + "/timeline?" + url.Values{"scope": {scope}, "range": {sp.Name}}.Encode()
	for i, c := range counts {
		start := from.Add(time.Duration(i) * sp.Step)
		h := c * chartHeight / top
		if c > 0 && h < 2 {
			h = 2
		}
		d.Bars = append(d.Bars, bar{
			Start: start, Count: c, X: i * barWidth, Y: chartHeight - h, H: h,
			Href:  d.Href + "&bucket=" + strconv.FormatInt(start.Unix(), 10),
			Label: fmt.Sprintf("%s from %s", changesCount(c), start.Format("2006-01-02 15:04 MST")),
		})
	}
	return d, nil
}

// commandsAt are the restore and diff commands of a namespace scope ("ns/"
// or "ns/type/") as it was at t; none for other scopes.
func (s *Server) commandsAt(cluster, scope string, t time.Time) (restore, diff string) {
	ns, rest, ok := strings.Cut(scope, "/")
	if !ok || ns == "" || ns == object.ClusterScope || strings.Count(rest, "/") > 1 || (rest != "" && !strings.HasSuffix(rest, "/")) {
		return "", ""
	}
	sel := "-n " + ns
	if typ := strings.TrimSuffix(rest, "/"); typ != "" {
		sel += " --include-resources " + typ
	}
	at := t.UTC().Format(time.RFC3339)
	return fmt.Sprintf("%s restore %s --backup-cluster %s --at %s", s.opts.Command, sel, cluster, at),
		fmt.Sprintf("%s diff %s --backup-cluster %s --at %s --details", s.opts.Command, sel, cluster, at)
}

func changesCount(n int) string {
	if n == 1 {
		return "1 change"
	}
	return fmt.Sprintf("%d changes", n)
}

func scopeName(cluster, scope string) string {
	switch {
	case scope == "":
		return "cluster " + cluster
	case strings.HasSuffix(scope, "/"):
		return "namespace " + strings.TrimSuffix(scope, "/")
	}
	return strings.TrimSuffix(scope, ".yaml")
}

// timeline is the timeline page: the chart and the changes of the bar
// chosen.
func (s *Server) timeline(w http.ResponseWriter, r *http.Request) {
	cluster := r.PathValue("cluster")
	q := r.URL.Query()
	scope := q.Get("scope")
	if !validName(cluster) || strings.Contains(scope, "..") || strings.HasPrefix(scope, "/") {
		s.fail(w, http.StatusNotFound, errors.New("no such timeline"))
		return
	}
	d, err := s.timelineOf(r.Context(), cluster, scope, q.Get("range"), "")
	if err != nil {
		s.fail(w, http.StatusBadGateway, err)
		return
	}
	if b := q.Get("bucket"); b != "" {
		sec, err := strconv.ParseInt(b, 10, 64)
		if err != nil {
			s.fail(w, http.StatusBadRequest, fmt.Errorf("bucket %q: want a Unix time", b))
			return
		}
		start := time.Unix(sec, 0).UTC()
		for i := range d.Bars {
			if d.Bars[i].Start.Equal(start) {
				d.Bars[i].Selected = true
				d.Selected = &d.Bars[i]
			}
		}
		changes, _, err := s.changes(r.Context(), cluster, scope, start, start.Add(d.Span.Step))
		if err != nil {
			s.fail(w, http.StatusBadGateway, err)
			return
		}
		sort.Slice(changes, func(i, j int) bool { return changes[i].Time.Before(changes[j].Time) })
		if len(changes) > maxListed {
			d.More, changes = len(changes)-maxListed, changes[:maxListed]
		}
		d.Changes = changes
		d.Restore, d.Diff = s.commandsAt(cluster, scope, start.Add(d.Span.Step))
	}
	s.render(w, "timeline", page{Title: "Timeline of " + d.ScopeName, Crumbs: []crumb{{"Clusters", "/"}, {cluster, "/c/" + cluster + "/"}, {"timeline", ""}}, Data: d})
}

// changes are the changes of scope in [from, to): from the change
// journal when the store keeps one, else from the versions the bucket
// keeps.
func (s *Server) changes(ctx context.Context, cluster, scope string, from, to time.Time) ([]changeRow, string, error) {
	layout := s.layout(cluster)
	row := func(rel string, t time.Time, op, manager string) (changeRow, bool) {
		k, ok := layout.Parse(layout.Root() + rel)
		if !ok || t.Before(from) || !t.Before(to) {
			return changeRow{}, false
		}
		if !inScope(rel, scope) {
			return changeRow{}, false
		}
		return changeRow{Time: t, Op: op, Key: k, Manager: manager, Href: objectPath(cluster, k)}, true
	}
	var out []changeRow
	source := "versions"
	// The journal holds the changes from its oldest object on (older ones
	// expire); what the range holds before that comes from the versions.
	until := to
	// The journal's first entries, by key: a version stored just before
	// the journal began may be one of them (an entry is timed when the
	// store answered), and is then counted once.
	early := map[string][]time.Time{}
	if s.opts.Journal != nil {
		start, ok, err := s.journalStart(ctx, layout)
		if err != nil {
			return nil, "", err
		}
		if ok && start.Before(to) {
			lo := from
			if start.After(lo) {
				lo = start
			}
			objs, err := s.journalBetween(ctx, layout, lo, to)
			if err != nil {
				return nil, "", err
			}
			for _, o := range objs {
				for _, e := range o.Entries {
					if c, ok := row(e.Key, e.Time, e.Op, e.Manager); ok && !e.Time.Before(start) {
						out = append(out, c)
						if e.Time.Before(start.Add(journalSkew)) {
							early[e.Key] = append(early[e.Key], e.Time)
						}
					}
				}
			}
			if !from.Before(start) {
				return out, "journal", nil
			}
			until, source = start, "journal and versions"
		}
	}
	versions, err := s.opts.Reader.Versions(ctx, layout.Root()+strings.TrimSuffix(scope, ".yaml"))
	if err != nil {
		return nil, "", err
	}
	for _, v := range versions {
		op := journal.Put
		if v.DeleteMarker {
			op = journal.Delete
		}
		rel := strings.TrimPrefix(v.Key, layout.Root())
		if !v.Time.Before(until) || slices.ContainsFunc(early[rel], func(t time.Time) bool { return t.Sub(v.Time).Abs() < journalSkew }) {
			continue
		}
		if c, ok := row(rel, v.Time, op, ""); ok {
			out = append(out, c)
		}
	}
	return out, source, nil
}

// journalSkew bounds how far a journal entry's time may be from its
// version's: the entry is timed when the store answered the write.
const journalSkew = 2 * time.Second

// journalStart is the time from which the cluster's journal names every
// change: the first entry of its oldest object (or the time it was taken,
// if empty); ok is false without a journal.
func (s *Server) journalStart(ctx context.Context, layout object.Layout) (time.Time, bool, error) {
	var first string
	err := s.opts.Journal.WalkAfter(ctx, journal.Prefix(layout), "", func(st object.Stored) error {
		if _, ok := journal.TakenAt(st.Key); !ok {
			return nil
		}
		first = st.Key
		return errPast
	})
	if err != nil && !errors.Is(err, errPast) {
		return time.Time{}, false, err
	}
	if first == "" {
		return time.Time{}, false, nil
	}
	taken, _ := journal.TakenAt(first)
	objs, err := s.readJournal(ctx, []string{first})
	if err != nil {
		return time.Time{}, false, err
	}
	start := taken
	for _, o := range objs {
		for _, e := range o.Entries {
			if e.Time.Before(start) {
				start = e.Time
			}
		}
	}
	return start, true, nil
}

// inScope says whether the key rel (below the cluster's root) is in scope:
// the cluster (""), a namespace ("ns/") or one key.
func inScope(rel, scope string) bool {
	if strings.HasSuffix(scope, "/") {
		return strings.HasPrefix(rel, scope)
	}
	return scope == "" || rel == scope
}

// errPast ends a journal listing past the range read.
var errPast = errors.New("past the range")

// journalCache keeps decoded journal objects: they are never rewritten.
type journalCache struct {
	mu      sync.Mutex
	objects map[string]journal.Object
	entries int
}

// maxCachedEntries bounds the journal entries kept in memory.
const maxCachedEntries = 500_000

// journalBetween reads the journal objects that may hold entries of
// [from, to): an entry is in an object taken at or after its time, so
// those taken from from on, until one whose through time is at or after
// to (every write stored before that is in it or an earlier one). The
// objects taken up to a minute after to are read first, the usual flush
// delay; if none of them is through to (the service could not flush for
// a while), further ones, a batch at a time.
func (s *Server) journalBetween(ctx context.Context, layout object.Layout, from, to time.Time) ([]journal.Object, error) {
	var out []journal.Object
	after := journal.Since(layout, from)
	for {
		var keys []string
		past := 0
		walked := s.opts.Journal.WalkAfter(ctx, journal.Prefix(layout), after, func(st object.Stored) error {
			taken, ok := journal.TakenAt(st.Key)
			if !ok {
				return nil
			}
			if taken.After(to.Add(time.Minute)) {
				if past++; past > 16 {
					return errPast
				}
			}
			keys = append(keys, st.Key)
			return nil
		})
		if walked != nil && !errors.Is(walked, errPast) {
			return nil, walked
		}
		objs, err := s.readJournal(ctx, keys)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
		if walked == nil || len(keys) == 0 {
			return out, nil
		}
		for _, o := range objs {
			if !o.Through.Before(to) {
				return out, nil
			}
		}
		after = keys[len(keys)-1]
	}
}

// readJournal reads the journal objects named, each checked once and
// then kept.
func (s *Server) readJournal(ctx context.Context, keys []string) ([]journal.Object, error) {
	var out []journal.Object
	var missing []string
	s.cache.mu.Lock()
	for _, k := range keys {
		if o, ok := s.cache.objects[k]; ok {
			out = append(out, o)
		} else {
			missing = append(missing, k)
		}
	}
	s.cache.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	// Read in parallel: a long range names many small objects.
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan string)
	)
	for range min(8, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				o, err := journal.ReadObject(ctx, s.opts.Journal, k, s.opts.Signer, s.opts.AcceptUnsigned)
				switch {
				case errors.Is(err, object.ErrNotFound):
					continue // expired since the listing
				case errors.Is(err, object.ErrForged), errors.Is(err, object.ErrUnsigned), errors.Is(err, journal.ErrFormat):
					s.opts.Log.Warn("A change journal object fails its check; left out of the timeline", zap.String("key", k), zap.Error(err))
					continue
				case err != nil:
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					continue
				}
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
				s.cache.mu.Lock()
				if s.cache.entries+len(o.Entries) > maxCachedEntries {
					s.cache.objects, s.cache.entries = map[string]journal.Object{}, 0
				}
				s.cache.objects[k] = o
				s.cache.entries += len(o.Entries)
				s.cache.mu.Unlock()
			}
		}()
	}
	for _, k := range missing {
		next <- k
	}
	close(next)
	wg.Wait()
	return out, firstErr
}
