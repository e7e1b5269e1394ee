package gitsync

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/sink/sinktest"
	"github.com/cluster-backup/cluster-backup/testenv"
)

// bucket is an in-memory versioned bucket with a change journal, whose
// requests git-sync makes are counted.
type bucket struct {
	*sinktest.Bucket
	next int
}

var testLayout = object.Layout{Prefix: "clusterbackup", Cluster: "east"}

func newBucket() *bucket { return &bucket{Bucket: sinktest.New()} }

func cmBody(name, value string) []byte {
	return fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: shop\ndata:\n  v: %q\n", name, value)
}

// put stores a version of shop/configmaps/name at t.
func (b *bucket) put(name, value, manager string, at time.Time) string {
	b.next++
	key := testLayout.Root() + "shop/configmaps/" + name + ".yaml"
	body := cmBody(name, value)
	b.PutAt(key, body, object.Meta{ResourceVersion: fmt.Sprint(b.next), APIVersion: "v1", SHA256: object.Digest(body), Manager: manager}, at)
	return key
}

// record writes a journal object naming keys, complete through through.
func (b *bucket) record(through time.Time, keys ...string) {
	var entries []journal.Entry
	for _, k := range keys {
		entries = append(entries, journal.Entry{Time: through, Op: journal.Put, Key: strings.TrimPrefix(k, testLayout.Root())})
	}
	body := journal.Encode(journal.Object{Through: through, Entries: entries})
	b.PutAt(journal.Name(testLayout, through, "00000000"), body, object.Meta{SHA256: object.Digest(body)}, through)
}

// cost counts the requests made after the first skip: listings of every
// version, of one key's versions, of the journal; reads of journal
// objects and of versions.
func (b *bucket) cost(skip int) (full, keys, journalLists, journalReads, reads int) {
	for _, r := range b.Requests()[skip:] {
		inJournal := strings.HasPrefix(r.Key, journal.Prefix(testLayout))
		switch {
		case r.Op == "versions" && r.Key == testLayout.Root():
			full++
		case r.Op == "versions":
			keys++
		case r.Op == "walk":
			journalLists++
		case r.Op == "get" && inJournal:
			journalReads++
		case r.Op == "get":
			reads++
		}
	}
	return
}

// requireGit skips without the git binary on a developer's machine; under
// CI=true a missing git is a failure.
func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if testenv.InCI() {
			t.Fatalf("CI=true and git is missing: %v", err)
		}
		t.Skip("git is not installed")
	}
}

func newSyncer(t *testing.T, b *bucket) (*Syncer, string) {
	t.Helper()
	dir := t.TempDir()
	remote := filepath.Join(dir, "remote.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", remote).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	s, err := New(b, Options{Repository: "file://" + remote, Window: time.Second, Workdir: filepath.Join(dir, "clone"),
		Layout: testLayout, Journal: b, AcceptUnsigned: true, Repair: time.Hour, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, remote
}

func gitLog(t *testing.T, remote string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", remote, "log"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git log: %v\n%s", err, out)
	}
	return string(out)
}

// pollCost backfills objects ConfigMaps, then counts the requests of the
// poll that follows one change.
func pollCost(t *testing.T, objects int) (full, keys, journalLists, journalReads, reads int) {
	t.Helper()
	b := newBucket()
	old := time.Now().Add(-time.Hour)
	for i := range objects {
		b.put(fmt.Sprintf("cm-%05d", i), "1", "helm", old.Add(time.Duration(i)*time.Millisecond))
	}
	s, remote := newSyncer(t, b)
	if _, err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if full, _, _, _, _ := b.cost(0); full != 1 {
		t.Fatalf("the first sync listed every version %d times, want once", full)
	}
	backfill := len(b.Requests())
	at := time.Now().Add(-5 * time.Second)
	key := b.put("cm-00007", "2", "kubectl-edit", at)
	b.record(at.Add(time.Millisecond), key)
	made, err := s.SyncOnce(context.Background())
	if err != nil || made != 1 {
		t.Fatalf("the poll after a change made %d commits, %v; want 1", made, err)
	}
	head := gitLog(t, remote, "-1", "--format=%an|%s", "main")
	if !strings.HasPrefix(head, "kubectl-edit|M v1/ConfigMap shop/cm-00007 rv=") || !strings.Contains(head, "by=kubectl-edit") {
		t.Errorf("the change is committed as %q", head)
	}
	return b.cost(backfill)
}

// TestFollowCostDoesNotGrowWithObjects: after the backfill, a poll that
// follows one change makes the same requests at 200 objects and at 2,000:
// one journal listing, one journal read, one version listing of the
// changed key and one read of its version; never a listing of every
// version.
func TestFollowCostDoesNotGrowWithObjects(t *testing.T) {
	requireGit(t)
	small := [5]int{}
	small[0], small[1], small[2], small[3], small[4] = pollCost(t, 200)
	large := [5]int{}
	large[0], large[1], large[2], large[3], large[4] = pollCost(t, 2000)
	want := [5]int{0, 1, 1, 1, 1}
	if small != want || large != want {
		t.Errorf("requests of a poll (full listings, key listings, journal listings, journal reads, reads): %v at 200 objects, %v at 2,000; want %v", small, large, want)
	}
}

// TestRepairFindsWhatTheJournalMissed: a version the journal never named
// (an entry lost when the service was killed) is committed by the next
// full listing, and a file changed behind git-sync's back is brought in
// line with the bucket.
func TestRepairFindsWhatTheJournalMissed(t *testing.T) {
	requireGit(t)
	b := newBucket()
	old := time.Now().Add(-time.Hour)
	b.put("a", "1", "helm", old)
	b.put("b", "1", "helm", old.Add(time.Second))
	s, remote := newSyncer(t, b)
	if _, err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	// b changes and is journaled; a changes earlier and is not.
	now := time.Now()
	b.put("a", "lost", "kubectl-edit", now.Add(-20*time.Second))
	keyB := b.put("b", "2", "helm", now.Add(-10*time.Second))
	b.record(now.Add(-9*time.Second), keyB)
	if _, err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	tree := func(name string) string {
		t.Helper()
		body, _ := os.ReadFile(filepath.Join(s.dir, "shop", "configmaps", name+".yaml"))
		return string(body)
	}
	if tree("b") != string(cmBody("b", "2")) || tree("a") != string(cmBody("a", "1")) {
		t.Fatalf("after following: a %q, b %q", tree("a"), tree("b"))
	}
	// Someone edits a file of ours and removes another in the clone.
	if err := os.WriteFile(filepath.Join(s.dir, "shop", "configmaps", "b.yaml"), []byte("edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "shop", "configmaps", "gone.yaml"), []byte("no key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.opts.Repair = time.Nanosecond // the next poll lists every version
	made, err := s.SyncOnce(context.Background())
	if err != nil || made != 1 {
		t.Fatalf("repair made %d commits, %v; want 1", made, err)
	}
	if tree("a") != string(cmBody("a", "lost")) || tree("b") != string(cmBody("b", "2")) || tree("gone") != "" {
		t.Errorf("after the repair: a %q, b %q, gone %q", tree("a"), tree("b"), tree("gone"))
	}
	msg := gitLog(t, remote, "-1", "--format=%B", "main")
	for _, want := range []string{"Repair: 3 objects brought in line with the bucket", "M v1/ConfigMap shop/a", "D shop/configmaps/gone.yaml"} {
		if !strings.Contains(msg, want) {
			t.Errorf("repair commit without %q:\n%s", want, msg)
		}
	}
	// Nothing to repair: no commit.
	if made, err := s.SyncOnce(context.Background()); err != nil || made != 0 {
		t.Errorf("a repair with nothing to do made %d commits, %v", made, err)
	}
}
