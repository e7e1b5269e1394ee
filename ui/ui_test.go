package ui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink/sinktest"
)

// store is an in-memory versioned bucket.
type store struct {
	*sinktest.Bucket
	n int
}

func newStore() *store { return &store{Bucket: sinktest.New()} }

func (s *store) put(key, body, manager string, at time.Time) {
	s.n++
	s.PutAt(key, []byte(body), object.Meta{Manager: manager, ResourceVersion: fmt.Sprint(s.n)}, at)
}

func (s *store) del(key string, at time.Time) { s.DeleteAt(key, at) }

// putJournal stores a journal object of east's, taken at, with entries
// up to through.
func (s *store) putJournal(at, through time.Time, entries ...journal.Entry) {
	body := journal.Encode(journal.Object{Through: through, Entries: entries})
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "east"}
	s.PutAt(journal.Name(layout, at, "00000000"), body, object.Meta{SHA256: object.Digest(body)}, at)
}

// serve starts the web view over s at now; without journal, it reads no
// journal.
func (s *store) serve(t *testing.T, now time.Time, withJournal bool) *httptest.Server {
	t.Helper()
	srv, err := New(Options{Reader: s, Lister: s, Folders: s, Journal: s, AcceptUnsigned: true, Prefix: "clusterbackup",
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if !withJournal {
		srv.opts.Journal = nil
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs
}

// versions are key's versions, newest first.
func (s *store) versions(key string) []object.Version {
	vs, _ := s.Versions(context.Background(), key)
	return vs
}

const secretValue = "c3VwZXItc2VjcmV0LXZhbHVl" // base64 of super-secret-value

func secret(v string) string {
	return "apiVersion: v1\ndata:\n  password: " + v + "\nkind: Secret\nmetadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{\"data\":{\"password\":\"" + v + "\"}}'\n  name: creds\n  namespace: shop\ntype: Opaque\n"
}

func cm(v string) string {
	return "apiVersion: v1\ndata:\n  level: " + v + "\n  other: same\nkind: ConfigMap\nmetadata:\n  labels:\n    app: web\n    tier: config\n  name: settings\n  namespace: shop\n"
}

func fixture(t *testing.T, withJournal bool) (*httptest.Server, *store, time.Time) {
	t.Helper()
	s := newStore()
	now := time.Date(2026, 12, 7, 12, 30, 0, 0, time.UTC)
	root := "clusterbackup/east/"
	s.put(root+"shop/configmaps/settings.yaml", cm("debug"), "helm", now.Add(-50*time.Minute))
	s.put(root+"shop/configmaps/settings.yaml", cm("info"), "kubectl-edit", now.Add(-30*time.Minute))
	s.put(root+"shop/configmaps/settings.yaml", cm("warn"), "kubectl-edit", now.Add(-10*time.Minute))
	s.put(root+"shop/secrets/creds.yaml", secret("b2xkLXZhbHVl"), "helm", now.Add(-40*time.Minute))
	s.put(root+"shop/secrets/creds.yaml", secret(secretValue), "helm", now.Add(-20*time.Minute))
	s.put(root+"_cluster/namespaces/shop.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n", "", now.Add(-55*time.Minute))
	s.put(root+"shop/configmaps/gone.yaml", cm("x"), "", now.Add(-45*time.Minute))
	s.del(root+"shop/configmaps/gone.yaml", now.Add(-5*time.Minute))
	if withJournal {
		s.putJournal(now.Add(-5*time.Minute), now.Add(-10*time.Minute),
			journal.Entry{Time: now.Add(-10 * time.Minute), Op: journal.Put, Key: "shop/configmaps/settings.yaml", Manager: "kubectl-edit"},
			journal.Entry{Time: now.Add(-5 * time.Minute), Op: journal.Delete, Key: "shop/configmaps/gone.yaml"})
	}
	hs := s.serve(t, now, withJournal)
	return hs, s, now
}

func get(t *testing.T, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, body)
	}
	return string(body), resp.Header
}

func TestPages(t *testing.T) {
	hs, s, _ := fixture(t, true)
	home, h := get(t, hs.URL+"/")
	if !strings.Contains(home, `href="/c/east/"`) || strings.Contains(home, "_journal") {
		t.Errorf("home page:\n%s", home)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || h.Get("X-Frame-Options") != "DENY" {
		t.Errorf("security headers %v", h)
	}
	cluster, _ := get(t, hs.URL+"/c/east/")
	for _, want := range []string{`href="/c/east/ns/shop/"`, "<td>2</td>", "namespaces"} {
		if !strings.Contains(cluster, want) {
			t.Errorf("cluster page without %q:\n%s", want, cluster)
		}
	}
	found, _ := get(t, hs.URL+"/c/east/?q=sett")
	if !strings.Contains(found, `href="/c/east/o/shop/configmaps/settings"`) || strings.Contains(found, "creds</a>") {
		t.Errorf("search for sett:\n%s", found)
	}
	byLabel, _ := get(t, hs.URL+"/c/east/?l=app%3Dweb,tier!%3Dcache")
	if !strings.Contains(byLabel, `href="/c/east/o/shop/configmaps/settings"`) || strings.Contains(byLabel, "/o/shop/secrets/creds") || strings.Contains(byLabel, "/o/_cluster/namespaces/shop") {
		t.Errorf("search by label:\n%s", byLabel)
	}
	both, _ := get(t, hs.URL+"/c/east/?q=cred&l=app%3Dweb")
	if strings.Contains(both, `/o/shop/configmaps/settings"`) || strings.Contains(both, `/o/shop/secrets/creds"`) {
		t.Errorf("name and label together select nothing here:\n%s", both)
	}
	bad, _ := get(t, hs.URL+"/c/east/?l=app+in+(x")
	if !strings.Contains(bad, `role="alert">Label selector:`) {
		t.Errorf("a bad selector is not reported:\n%s", bad)
	}
	ns, _ := get(t, hs.URL+"/c/east/ns/shop/")
	if !strings.Contains(ns, "restore -n shop --backup-cluster east --at 2026-12-07T12:30:00Z") || strings.Contains(ns, ">gone<") {
		t.Errorf("namespace page:\n%s", ns)
	}
	obj, _ := get(t, hs.URL+"/c/east/o/shop/configmaps/settings")
	if n := strings.Count(obj, `<tr class="version`); n != 3 {
		t.Errorf("%d version rows, want 3", n)
	}
	for _, want := range []string{
		`<span class="mark">-</span>  level: info`, `<span class="mark">+</span>  level: warn`, "by kubectl-edit",
		"cluster-backup restore configmaps/settings -n shop --backup-cluster east --at 2026-12-07T12:20:00Z",
		"1 lines added, 1 removed",
	} {
		if !strings.Contains(obj, want) {
			t.Errorf("object page without %q:\n%s", want, obj)
		}
	}
	// An older pair, side by side.
	first := s.versions("clusterbackup/east/shop/configmaps/settings.yaml")[2].ID
	second := s.versions("clusterbackup/east/shop/configmaps/settings.yaml")[1].ID
	split, _ := get(t, hs.URL+"/c/east/o/shop/configmaps/settings?a="+first+"&b="+second+"&view=split")
	if !strings.Contains(split, `<td class="del">  level: debug</td>`) || !strings.Contains(split, `<td class="add">  level: info</td>`) {
		t.Errorf("side by side:\n%s", split)
	}
	// Read-only.
	resp, err := http.Post(hs.URL+"/c/east/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	for _, bad := range []string{"/c/east/o/shop/configmaps/nothing", "/c/east/timeline?scope=../x", "/c/../o/a/b/c"} {
		resp, err := http.Get(hs.URL + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("GET %s: 200", bad)
		}
	}
}

func TestSecretValuesNeverShown(t *testing.T) {
	hs, _, _ := fixture(t, true)
	for _, path := range []string{"/c/east/o/shop/secrets/creds", "/c/east/o/shop/secrets/creds?view=split", "/c/east/ns/shop/", "/c/east/?q=creds"} {
		page, _ := get(t, hs.URL+path)
		for _, v := range []string{secretValue, "b2xkLXZhbHVl", "super-secret-value"} {
			if strings.Contains(page, v) {
				t.Errorf("%s shows a Secret value %q", path, v)
			}
		}
		if strings.Contains(path, "secrets/creds") && !strings.Contains(page, "*** (after)") {
			t.Errorf("%s does not show that the value changed:\n%s", path, page)
		}
	}
}

func TestTimeline(t *testing.T) {
	for _, withJournal := range []bool{true, false} {
		hs, _, now := fixture(t, withJournal)
		page, _ := get(t, hs.URL+"/c/east/timeline?scope=shop/&range=1h")
		// The journal begins 10 minutes ago: what the hour holds before
		// that comes from the versions.
		source := "bucket's versions, then the change journal"
		if !withJournal {
			source = "bucket's versions"
		}
		if !strings.Contains(page, "from the "+source+")") {
			t.Errorf("journal %v: timeline not from the %s:\n%s", withJournal, source, page)
		}
		if early := fmt.Sprintf("bucket=%d", now.Add(-50*time.Minute).Unix()); !strings.Contains(page, early) {
			t.Errorf("journal %v: no bar for the change of 50 minutes ago, before the journal began:\n%s", withJournal, page)
		}
		// The minute of the last update of settings has a bar, and its
		// changes are listed behind it.
		minute := now.Add(-10 * time.Minute).Unix()
		href := fmt.Sprintf("bucket=%d", minute)
		if !strings.Contains(page, href) {
			t.Errorf("journal %v: no bar for the minute %d:\n%s", withJournal, minute, page)
		}
		changes, _ := get(t, hs.URL+"/c/east/timeline?scope=shop/&range=1h&"+href)
		if !strings.Contains(changes, `href="/c/east/o/shop/configmaps/settings"`) || strings.Contains(changes, "creds") {
			t.Errorf("journal %v: changes of the minute:\n%s", withJournal, changes)
		}
		// The namespace as it was at the end of that minute.
		if at := now.Add(-9 * time.Minute).Truncate(time.Minute).Format(time.RFC3339); !strings.Contains(changes, "cluster-backup restore -n shop --backup-cluster east --at "+at) {
			t.Errorf("journal %v: no restore command at %s:\n%s", withJournal, at, changes)
		}
		// One type of the namespace: the Secret's change, not the ConfigMaps'.
		secrets, _ := get(t, hs.URL+fmt.Sprintf("/c/east/timeline?scope=shop/secrets/&range=1h&bucket=%d", now.Add(-20*time.Minute).Unix()))
		if !strings.Contains(secrets, `href="/c/east/o/shop/secrets/creds"`) || strings.Contains(secrets, "configmaps/settings") ||
			!strings.Contains(secrets, "restore -n shop --include-resources secrets --backup-cluster east") {
			t.Errorf("journal %v: the Secrets of shop:\n%s", withJournal, secrets)
		}
	}
}

func TestDiffTexts(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
	b := "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\nk\n"
	d := diffTexts(a, b)
	if d.Added != 2 || d.Removed != 1 {
		t.Errorf("added %d removed %d", d.Added, d.Removed)
	}
	var kinds []string
	for _, l := range d.Unified {
		kinds = append(kinds, l.Kind)
	}
	if got := strings.Join(kinds, ","); got != "gap,ctx,ctx,ctx,del,add,ctx,ctx,ctx,ctx,ctx,add" {
		t.Errorf("unified kinds %s", got)
	}
	if d := diffTexts("", "x\n"); d.Added != 1 || len(d.Split) != 1 || d.Split[0].Right.Text != "x" {
		t.Errorf("a first version: %+v", d)
	}
}

// TestTimelineCountsEachChangeOnce: where the journal begins, a change is
// both a version (timed by the store) and the journal's first entry
// (timed when the store answered, a moment later): it is counted once;
// the changes before it, from the versions, and after it, from the
// journal, each once too.
func TestTimelineCountsEachChangeOnce(t *testing.T) {
	s := newStore()
	now := time.Date(2026, 12, 7, 12, 30, 0, 0, time.UTC)
	root := "clusterbackup/east/"
	s.put(root+"shop/configmaps/a.yaml", cm("1"), "", now.Add(-40*time.Minute)) // before the journal
	began := now.Add(-20 * time.Minute)
	s.put(root+"shop/configmaps/a.yaml", cm("2"), "", began.Add(-300*time.Millisecond))
	s.put(root+"shop/configmaps/b.yaml", cm("1"), "", now.Add(-10*time.Minute))
	s.putJournal(now.Add(-10*time.Minute), now.Add(-10*time.Minute),
		journal.Entry{Time: began, Op: journal.Put, Key: "shop/configmaps/a.yaml"},
		journal.Entry{Time: now.Add(-10 * time.Minute), Op: journal.Put, Key: "shop/configmaps/b.yaml"})
	hs := s.serve(t, now, true)
	page, _ := get(t, hs.URL+"/c/east/timeline?scope=shop/&range=1h")
	if !strings.Contains(page, "3 changes from") {
		t.Errorf("the hour counts other than 3 changes:\n%s", page)
	}
}
