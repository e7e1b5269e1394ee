package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/sink"
	"github.com/cluster-backup/cluster-backup/ui"
)

// uiResult is the web view at scale: a cluster of historyObjects objects,
// historyChanged of which have five versions, each change in the change
// journal.
type uiResult struct {
	Objects        int `json:"objects"`
	VersionedKeys  int `json:"versioned_keys"`
	Versions       int `json:"versions_each"`
	JournalObjects int `json:"journal_objects"`
	JournalEntries int `json:"journal_entries"`
	// ListSeconds is the baseline: one listing of the cluster's keys with
	// minio-go alone, measured in the same run.
	ListSeconds   float64 `json:"list_seconds"`
	FirstCold     float64 `json:"first_page_cold_seconds"`
	FirstWarm     float64 `json:"first_page_warm_seconds"`
	HistoryCold   float64 `json:"history_cold_seconds"`
	HistoryWarm   float64 `json:"history_warm_seconds"`
	TimelineCold  float64 `json:"timeline_cold_seconds"`
	TimelineWarm  float64 `json:"timeline_warm_seconds"`
	TimelineCount int     `json:"timeline_changes"`
}

const (
	uiVersions = 5
	// uiJournalEntries is how many entries one journal object holds here:
	// the service writes one a second, a few hundred entries each under
	// load.
	uiJournalEntries = 500
)

// uiScenario stores the cluster, then times the view's pages served by an
// in-process server reading the store.
func (e *env) uiScenario(ctx context.Context) (uiResult, error) {
	r := uiResult{Objects: e.cfg.historyObjects, VersionedKeys: e.cfg.historyChanged, Versions: uiVersions}
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "webview"}
	var err error
	if r.JournalObjects, r.JournalEntries, err = e.storeHistory(ctx, layout); err != nil {
		return r, err
	}

	// The baseline: one listing of the cluster's keys.
	t0 := time.Now()
	listed := 0
	for o := range e.s3.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: layout.Root(), Recursive: true}) {
		if o.Err != nil {
			return r, o.Err
		}
		listed++
	}
	r.ListSeconds = time.Since(t0).Seconds()

	store, err := sink.NewMinIO(ctx, sink.MinIOOptions{Endpoint: e.store.endpoint, AccessKey: e.store.accessKey, SecretKey: e.store.secretKey,
		Bucket: bucket, ReadOnly: true, Connections: 16}, zap.NewNop())
	if err != nil {
		return r, err
	}
	// Each pair of requests goes to a new server: the first finds nothing
	// cached (no list of keys, no journal object), the second all of it.
	pair := func(path, want string, cold, warm *float64) error {
		srv, err := ui.New(ui.Options{Reader: restore.Signed{Reader: store, AcceptUnsigned: true}, Lister: store, Folders: store,
			Journal: store, AcceptUnsigned: true, Prefix: "clusterbackup"})
		if err != nil {
			return err
		}
		hs := httptest.NewServer(srv.Handler())
		defer hs.Close()
		for _, to := range []*float64{cold, warm} {
			t0 := time.Now()
			resp, err := http.Get(hs.URL + path)
			if err != nil {
				return err
			}
			page, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			*to = time.Since(t0).Seconds()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(want)) {
				return fmt.Errorf("GET %s: %s, without %q", path, resp.Status, want)
			}
		}
		return nil
	}
	object := "/c/webview/o/" + e.cmNamespace(7) + "/configmaps/" + cmName(7)
	if err := firstOf(firstOf(pair("/c/webview/", fmt.Sprintf("%d objects", e.cfg.historyObjects), &r.FirstCold, &r.FirstWarm),
		pair(object, `<tr class="version`, &r.HistoryCold, &r.HistoryWarm)),
		pair("/c/webview/timeline?range=1h", fmt.Sprintf("%d changes", r.JournalEntries), &r.TimelineCold, &r.TimelineWarm)); err != nil {
		return r, err
	}
	r.TimelineCount = r.JournalEntries
	e.log("web view at %d objects (listing them: %.2fs for %d keys): first page %.3fs cold, %.3fs warm; history of a key of %d versions %.3fs, %.3fs; timeline of %d changes %.3fs cold, %.3fs warm",
		e.cfg.historyObjects, r.ListSeconds, listed, r.FirstCold, r.FirstWarm, uiVersions, r.HistoryCold, r.HistoryWarm, r.JournalEntries, r.TimelineCold, r.TimelineWarm)
	return r, nil
}

// storeHistory stores the cluster of the web view and git-sync scenarios
// straight into the bucket, with its change journal: historyObjects
// objects, historyChanged of them with uiVersions versions.
func (e *env) storeHistory(ctx context.Context, layout object.Layout) (journalObjects, journalEntries int, err error) {
	key := func(i int) string {
		return layout.Key(object.Ref{Resource: "configmaps", Namespace: e.cmNamespace(i), Name: cmName(i)})
	}
	body := func(i, v int) []byte {
		return fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  version: %q\n", cmName(i), e.cmNamespace(i), fmt.Sprint(v))
	}
	start := time.Now()
	// Each entry is timed as the service times it: at its write.
	written := make([]time.Time, e.cfg.historyObjects)
	put := func(n, v int) error {
		return e.putAll(ctx, n, func(i int) (string, []byte) { written[i] = time.Now().UTC(); return key(i), body(i, v) })
	}
	journaled := func(n int) []journal.Entry {
		var out []journal.Entry
		for i := range n {
			out = append(out, journal.Entry{Time: written[i], Op: journal.Put, Key: key(i)[len(layout.Root()):], Manager: "bench"})
		}
		return out
	}
	if err := put(e.cfg.historyObjects, 0); err != nil {
		return 0, 0, err
	}
	entries := journaled(e.cfg.historyObjects)
	flush := func() error {
		for len(entries) > 0 {
			n := min(len(entries), uiJournalEntries)
			chunk := entries[:n]
			entries = entries[n:]
			if err := e.putJournal(ctx, layout, time.Now().UTC(), chunk); err != nil {
				return err
			}
			journalObjects++
			journalEntries += n
			nextMillisecond()
		}
		return nil
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	for v := 1; v < uiVersions; v++ {
		if err := put(e.cfg.historyChanged, v); err != nil {
			return 0, 0, err
		}
		entries = append(entries, journaled(e.cfg.historyChanged)...)
		if err := flush(); err != nil {
			return 0, 0, err
		}
	}
	e.log("stored %d objects, %d of them with %d versions, and %d journal objects in %.0fs", e.cfg.historyObjects, e.cfg.historyChanged, uiVersions, journalObjects, time.Since(start).Seconds())
	return journalObjects, journalEntries, nil
}

// putJournal writes one journal object of entries, taken at taken, as the
// service writes them (unsigned: the bench sets no integrity key).
func (e *env) putJournal(ctx context.Context, layout object.Layout, taken time.Time, entries []journal.Entry) error {
	b := journal.Encode(journal.Object{Through: taken, Entries: entries})
	_, err := e.s3.PutObject(ctx, bucket, journal.Name(layout, taken, "bench000"), bytes.NewReader(b), int64(len(b)),
		sink.PutOptions(object.Meta{SHA256: object.Digest(b)}))
	return err
}

// rows are the web view's lines of the results table.
func (u *uiResult) rows(b *strings.Builder) {
	fmt.Fprintf(b, "| web view, a cluster of %d objects: its first page | <= 0.3 s (the listing of its keys, the baseline: %.2f s) | %.3f s once listed; %.2f s for the very first, %.2f x the listing | %s |\n",
		u.Objects, u.ListSeconds, u.FirstWarm, u.FirstCold, u.FirstCold/u.ListSeconds, verdict(u.FirstWarm <= 0.3))
	fmt.Fprintf(b, "| web view: an object's history and diff (%d versions) | <= 0.5 s | %.3f s, then %.3f s | %s |\n", u.Versions, u.HistoryCold, u.HistoryWarm, verdict(u.HistoryCold <= 0.5))
	fmt.Fprintf(b, "| web view: the timeline of %d objects x %d versions (%d changes in %d journal objects) | <= 1 s | %.3f s, then %.3f s | %s |\n",
		u.VersionedKeys, u.Versions, u.JournalEntries, u.JournalObjects, u.TimelineCold, u.TimelineWarm, verdict(u.TimelineCold <= 1))
}
