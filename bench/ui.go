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

// uiResult is the web view at scale: a cluster of uiObjects objects, of
// which uiVersioned have five versions, each change in the change journal.
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
	uiObjects   = 50000
	uiVersioned = 10000
	uiVersions  = 5
	// uiJournalEntries is how many entries one journal object holds here:
	// the service writes one a second, a few hundred entries each under
	// load.
	uiJournalEntries = 500
)

// uiScenario stores the cluster, then times the view's pages served by an
// in-process server reading the store.
func (e *env) uiScenario(ctx context.Context) (uiResult, error) {
	r := uiResult{Objects: uiObjects, VersionedKeys: uiVersioned, Versions: uiVersions}
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "webview"}
	key := func(i int) string {
		return layout.Key(object.Ref{Resource: "configmaps", Namespace: e.cmNamespace(i), Name: cmName(i)})
	}
	body := func(i, v int) []byte {
		return fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  version: %q\n", cmName(i), e.cmNamespace(i), fmt.Sprint(v))
	}
	if err := e.storeWebView(ctx, layout, key, body, &r); err != nil {
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
	srv, err := ui.New(ui.Options{Reader: restore.Signed{Reader: store, AcceptUnsigned: true}, Lister: store, Folders: store,
		Journal: store, AcceptUnsigned: true, Prefix: "clusterbackup"})
	if err != nil {
		return r, err
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	timed := func(path string) (float64, error) {
		t0 := time.Now()
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return time.Since(t0).Seconds(), nil
	}
	object := "/c/webview/o/" + e.cmNamespace(7) + "/configmaps/" + cmName(7)
	for _, step := range []struct {
		path string
		to   *float64
	}{
		{"/c/webview/", &r.FirstCold}, {"/c/webview/", &r.FirstWarm},
		{object, &r.HistoryCold}, {object, &r.HistoryWarm},
		{"/c/webview/timeline?range=1h", &r.TimelineCold}, {"/c/webview/timeline?range=1h", &r.TimelineWarm},
	} {
		if *step.to, err = timed(step.path); err != nil {
			return r, err
		}
	}
	r.TimelineCount = r.JournalEntries
	e.log("web view at %d objects (listing them: %.2fs for %d keys): first page %.3fs cold, %.3fs warm; history of a key of %d versions %.3fs, %.3fs; timeline of %d changes %.3fs cold, %.3fs warm",
		uiObjects, r.ListSeconds, listed, r.FirstCold, r.FirstWarm, uiVersions, r.HistoryCold, r.HistoryWarm, r.JournalEntries, r.TimelineCold, r.TimelineWarm)
	return r, nil
}

// storeWebView stores the cluster of the web view scenario straight into
// the bucket, with its change journal.
func (e *env) storeWebView(ctx context.Context, layout object.Layout, key func(int) string, body func(i, v int) []byte, r *uiResult) error {
	start := time.Now()
	if err := e.putAll(ctx, uiObjects, func(i int) (string, []byte) { return key(i), body(i, 0) }); err != nil {
		return err
	}
	var entries []journal.Entry
	flush := func() error {
		for len(entries) > 0 {
			n := min(len(entries), uiJournalEntries)
			chunk := entries[:n]
			entries = entries[n:]
			b := journal.Encode(journal.Object{Through: chunk[n-1].Time, Entries: chunk})
			name := journal.Name(layout, chunk[n-1].Time, "bench0000")
			if _, err := e.s3.PutObject(ctx, bucket, name, bytes.NewReader(b), int64(len(b)),
				sink.PutOptions(object.Meta{SHA256: object.Digest(b)})); err != nil {
				return err
			}
			r.JournalObjects++
			r.JournalEntries += n
			nextMillisecond()
		}
		return nil
	}
	for v := 1; v < uiVersions; v++ {
		if err := e.putAll(ctx, uiVersioned, func(i int) (string, []byte) { return key(i), body(i, v) }); err != nil {
			return err
		}
		now := time.Now().UTC()
		for i := range uiVersioned {
			entries = append(entries, journal.Entry{Time: now, Op: journal.Put, Key: key(i)[len(layout.Root()):], Manager: "bench"})
		}
		if err := flush(); err != nil {
			return err
		}
	}
	e.log("web view: stored %d objects, %d of them with %d versions, and %d journal objects in %.0fs", uiObjects, uiVersioned, uiVersions, r.JournalObjects, time.Since(start).Seconds())
	return nil
}

// rows are the web view's lines of the results table.
func (u *uiResult) rows(b *strings.Builder) {
	fmt.Fprintf(b, "| web view, a cluster of %d objects: its first page | <= 0.3 s (the listing of its keys, the baseline: %.2f s) | %.3f s once listed; %.2f s for the very first, %.2f x the listing | %s |\n",
		u.Objects, u.ListSeconds, u.FirstWarm, u.FirstCold, u.FirstCold/u.ListSeconds, verdict(u.FirstWarm <= 0.3))
	fmt.Fprintf(b, "| web view: an object's history and diff (%d versions) | <= 0.5 s | %.3f s, then %.3f s | %s |\n", u.Versions, u.HistoryCold, u.HistoryWarm, verdict(u.HistoryCold <= 0.5))
	fmt.Fprintf(b, "| web view: the timeline of %d objects x %d versions (%d changes in %d journal objects) | <= 1 s | %.3f s, then %.3f s | %s |\n",
		u.VersionedKeys, u.Versions, u.JournalEntries, u.JournalObjects, u.TimelineCold, u.TimelineWarm, verdict(u.TimelineCold <= 1))
}
