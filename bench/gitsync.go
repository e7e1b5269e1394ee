package main

import (
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/gitsync"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
	"github.com/cluster-backup/cluster-backup/sink"
)

// gitResult is git-sync over the web view scenario's cluster: the backfill
// of every version into commits, and what one poll costs the store.
type gitResult struct {
	Versions      int     `json:"versions"`
	Commits       int     `json:"commits"`
	Seconds       float64 `json:"backfill_seconds"`
	HeapPeak      uint64  `json:"heap_peak_bytes"` // git-sync's own Go heap; git runs in processes of its own
	RepoBytes     int64   `json:"repository_bytes"`
	ChangeLists   int64   `json:"change_poll_list_requests"`
	ChangeGets    int64   `json:"change_poll_get_requests"`
	IdleLists     int64   `json:"idle_poll_list_requests"`
	IdleGets      int64   `json:"idle_poll_get_requests"`
	ChangeSeconds float64 `json:"change_poll_seconds"`
	FullLists     int64   `json:"full_listing_requests"`
}

// gitScenario backfills the web view scenario's cluster (which it stores
// first when the ui scenario did not) into a bare repository, then times a
// poll after one change and an idle poll, counting their requests.
func (e *env) gitScenario(ctx context.Context, stored bool) (gitResult, error) {
	var r gitResult
	layout := object.Layout{Prefix: "clusterbackup", Cluster: "webview"}
	if !stored {
		if _, _, err := e.storeHistory(ctx, layout); err != nil {
			return r, err
		}
	}
	remote := filepath.Join(e.work, "history.git")
	if out, err := exec.CommandContext(ctx, "git", "init", "-q", "--bare", "-b", "main", remote).CombinedOutput(); err != nil {
		return r, fmt.Errorf("git init: %w: %s", err, out)
	}
	// Through the counting proxy: its list and GET requests are counted.
	store, err := sink.NewMinIO(ctx, sink.MinIOOptions{Endpoint: e.proxy.addr, AccessKey: e.store.accessKey, SecretKey: e.store.secretKey,
		Bucket: bucket, ReadOnly: true, Connections: 16}, zap.NewNop())
	if err != nil {
		return r, err
	}
	s, err := gitsync.New(restore.Signed{Reader: store, AcceptUnsigned: true}, gitsync.Options{
		Repository: "file://" + remote, Window: 10 * time.Second, Workdir: filepath.Join(e.work, "history-clone"),
		Layout: layout, Journal: store, AcceptUnsigned: true, Repair: time.Hour, Log: zap.NewNop()})
	if err != nil {
		return r, err
	}
	if err := s.Prepare(ctx); err != nil {
		return r, err
	}
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	lists := e.proxy.lists.Load()
	start := time.Now()
	r.Commits, err = s.SyncOnce(ctx)
	r.Seconds = time.Since(start).Seconds()
	close(done)
	if err != nil {
		return r, err
	}
	r.FullLists = e.proxy.lists.Load() - lists
	r.HeapPeak = peak.Load()
	r.Versions = uiObjects + uiVersioned*(uiVersions-1)
	_ = filepath.WalkDir(remote, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				r.RepoBytes += info.Size()
			}
		}
		return nil
	})

	// The first poll reads the journal again from a little before the
	// backfill's listing; from the second on, a poll reads what is new.
	if _, err := s.SyncOnce(ctx); err != nil {
		return r, err
	}

	// One change, journaled as the service journals it, then polls until
	// it is committed; the requests of the poll that commits it.
	key := layout.Key(object.Ref{Resource: "configmaps", Namespace: e.cmNamespace(7), Name: cmName(7)})
	if err := e.putAll(ctx, 1, func(int) (string, []byte) {
		return key, fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  version: changed\n", cmName(7))
	}); err != nil {
		return r, err
	}
	taken := time.Now().UTC()
	entry := journal.Entry{Time: taken, Op: journal.Put, Key: strings.TrimPrefix(key, layout.Root()), Manager: "bench"}
	if err := e.putJournal(ctx, layout, taken, []journal.Entry{entry}); err != nil {
		return r, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		lists, gets := e.proxy.lists.Load(), e.proxy.gets.Load()
		t0 := time.Now()
		made, err := s.SyncOnce(ctx)
		if err != nil {
			return r, err
		}
		if made > 0 {
			r.ChangeSeconds = time.Since(t0).Seconds()
			r.ChangeLists, r.ChangeGets = e.proxy.lists.Load()-lists, e.proxy.gets.Load()-gets
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the change to %s was not committed within a minute", key)
		}
		time.Sleep(500 * time.Millisecond) // the next poll: versions settle for 3 s
	}
	lists, gets := e.proxy.lists.Load(), e.proxy.gets.Load()
	if made, err := s.SyncOnce(ctx); err != nil || made != 0 {
		return r, fmt.Errorf("an idle poll: %d commits, %v", made, err)
	}
	r.IdleLists, r.IdleGets = e.proxy.lists.Load()-lists, e.proxy.gets.Load()-gets
	e.log("git-sync: backfill of %d versions into %d commits in %.1fs (%d list requests), Go heap peak %s, repository %s; a poll after one change: %d lists, %d GETs in %.3fs; an idle poll: %d lists, %d GETs",
		r.Versions, r.Commits, r.Seconds, r.FullLists, mib(int64(r.HeapPeak)), mib(r.RepoBytes), r.ChangeLists, r.ChangeGets, r.ChangeSeconds, r.IdleLists, r.IdleGets)
	return r, nil
}

// rows are git-sync's lines of the results table.
func (g *gitResult) rows(b *strings.Builder) {
	fmt.Fprintf(b, "| git-sync backfill of %d versions (%d objects, %d of them with %d versions) | measured | %d commits in %.1f s, %d list requests, Go heap peak %s, bare repository %s | - |\n",
		g.Versions, uiObjects, uiVersioned, uiVersions, g.Commits, g.Seconds, g.FullLists, mib(int64(g.HeapPeak)), mib(g.RepoBytes))
	fmt.Fprintf(b, "| git-sync poll after one change, %d objects kept | requests that do not grow with the objects | %d list requests, %d GETs, %.3f s; idle: %d lists, %d GETs (a full listing: %d) | %s |\n",
		uiObjects, g.ChangeLists, g.ChangeGets, g.ChangeSeconds, g.IdleLists, g.IdleGets, g.FullLists, verdict(g.ChangeLists <= 3 && g.IdleLists <= 1))
}
