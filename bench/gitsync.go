package main

import (
	"context"
	"errors"
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
	Objects       int     `json:"objects"`
	Changed       int     `json:"changed_objects"`
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
	heapPeak := sampleHeap()
	lists := e.proxy.lists.Load()
	start := time.Now()
	r.Commits, err = s.SyncOnce(ctx)
	r.Seconds = time.Since(start).Seconds()
	r.HeapPeak = heapPeak()
	if err != nil {
		return r, err
	}
	r.FullLists = e.proxy.lists.Load() - lists
	r.Objects, r.Changed = e.cfg.historyObjects, e.cfg.historyChanged
	r.Versions = r.Objects + r.Changed*(uiVersions-1)
	_ = filepath.WalkDir(remote, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				r.RepoBytes += info.Size()
			}
		}
		return nil
	})

	if err := e.gitPolls(ctx, s, layout, &r); err != nil {
		return r, err
	}
	e.log("git-sync: backfill of %d versions into %d commits in %.1fs (%d list requests), Go heap peak %s, repository %s; a poll after one change: %d lists, %d GETs in %.3fs; an idle poll: %d lists, %d GETs",
		r.Versions, r.Commits, r.Seconds, r.FullLists, mib(int64(r.HeapPeak)), mib(r.RepoBytes), r.ChangeLists, r.ChangeGets, r.ChangeSeconds, r.IdleLists, r.IdleGets)
	return r, nil
}

// rows are git-sync's lines of the results table.
func (g *gitResult) rows(b *strings.Builder) {
	objects, changed := g.Objects, g.Changed
	fmt.Fprintf(b, "| git-sync backfill of %d versions (%d objects, %d of them with %d versions) | measured | %d commits in %.1f s, %d list requests, Go heap peak %s, bare repository %s | - |\n",
		g.Versions, objects, changed, uiVersions, g.Commits, g.Seconds, g.FullLists, mib(int64(g.HeapPeak)), mib(g.RepoBytes))
	fmt.Fprintf(b, "| git-sync poll after one change, %d objects kept | requests that do not grow with the objects | %d list requests, %d GETs, %.3f s; idle: %d lists, %d GETs (a full listing: %d) | %s |\n",
		objects, g.ChangeLists, g.ChangeGets, g.ChangeSeconds, g.IdleLists, g.IdleGets, g.FullLists, verdict(g.ChangeLists <= 3 && g.IdleLists <= 1))
}

// gitPolls changes one object (journaled as the service journals it) and
// counts the requests of the poll that commits it and of an idle poll.
func (e *env) gitPolls(ctx context.Context, s *gitsync.Syncer, layout object.Layout, r *gitResult) error {
	// The first polls read the journal again from a little before the
	// backfill's listing and commit what had not settled then: poll until
	// one commits nothing, once every version stored before the change is
	// old enough to be committed.
	settled := time.Now().Add(4 * time.Second)
	for deadline := time.Now().Add(time.Minute); ; {
		made, err := s.SyncOnce(ctx)
		if err != nil {
			return err
		}
		r.Commits += made // what had not settled at the backfill
		if made == 0 && time.Now().After(settled) {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("git-sync still commits a minute after the backfill")
		}
		time.Sleep(500 * time.Millisecond) // the next poll
	}

	// One change, journaled as the service journals it, then polls until
	// it is committed; the requests of the poll that commits it.
	key := layout.Key(object.Ref{Resource: "configmaps", Namespace: e.cmNamespace(7), Name: cmName(7)})
	if err := e.putAll(ctx, 1, func(int) (string, []byte) {
		return key, fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  version: changed\n", cmName(7))
	}); err != nil {
		return err
	}
	taken := time.Now().UTC()
	entry := journal.Entry{Time: taken, Op: journal.Put, Key: strings.TrimPrefix(key, layout.Root()), Manager: "bench"}
	if err := e.putJournal(ctx, layout, taken, []journal.Entry{entry}); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		lists, gets := e.proxy.lists.Load(), e.proxy.gets.Load()
		t0 := time.Now()
		made, err := s.SyncOnce(ctx)
		if err != nil {
			return err
		}
		if made > 0 {
			r.ChangeSeconds = time.Since(t0).Seconds()
			r.ChangeLists, r.ChangeGets = e.proxy.lists.Load()-lists, e.proxy.gets.Load()-gets
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the change to %s was not committed within a minute", key)
		}
		time.Sleep(500 * time.Millisecond) // the next poll: versions settle for 3 s
	}
	lists, gets := e.proxy.lists.Load(), e.proxy.gets.Load()
	made, err := s.SyncOnce(ctx)
	if err != nil {
		return err
	}
	if made != 0 {
		return fmt.Errorf("an idle poll made %d commits", made)
	}
	r.IdleLists, r.IdleGets = e.proxy.lists.Load()-lists, e.proxy.gets.Load()-gets
	return nil
}

// sampleHeap samples the Go heap in use until the function it returns is
// called, which returns the peak.
func sampleHeap() func() uint64 {
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
	return func() uint64 {
		close(done)
		return peak.Load()
	}
}
