// Package gitsync turns the bucket's versions into Git commits and pushes
// them: a derived view of the backup, never its system of record. It reads
// the bucket only (never the cluster), so it can serve a cluster that is
// gone.
//
// It follows the change journal the service writes beside the backup
// (package journal): each poll lists the journal from where the last one
// stopped and the versions of the keys it names, so a poll costs what
// changed, not what is kept. At start and every Options.Repair it lists
// every version instead, commits what the journal did not name (a service
// without a journal, entries lost in a crash) and brings any file that
// differs from the bucket back in line.
//
// Each window of changes (GIT_COMMIT_WINDOW) becomes one commit dated at
// its last change and authored by the field manager that made it, with
// one line per object changed and a trailer that
// records how far the history is synced; a restart (with or without its
// clone) resumes from that trailer on the remote branch. Paths are the
// bucket's keys below the prefix. A Secret goes in only when its values
// are encrypted. Pushes are fast-forward only: a push the remote rejects
// is fetched, our commits rebased on top (our paths are ours) and pushed
// again, with backoff.
package gitsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/cluster-backup/cluster-backup/encrypt"
	"github.com/cluster-backup/cluster-backup/journal"
	"github.com/cluster-backup/cluster-backup/object"
	"github.com/cluster-backup/cluster-backup/restore"
)

// SyncedTrailer is the commit trailer that records the time of the newest
// version a commit holds: where a restart resumes.
const SyncedTrailer = "Cluster-Backup-Synced-Through"

// settle is how old a version must be before it is committed: a PUT in
// flight when the bucket is listed must not be skipped by the next poll.
const settle = 3 * time.Second

// journalOverlap is how far before a full listing the journal is read
// again: settle, the service's flush interval (DEBOUNCE, a second or a
// few) and a margin for the clocks of the service and the store.
const journalOverlap = 15 * time.Second

// keyListers bounds the version listings of changed keys made at once.
const keyListers = 8

// Options configure a Syncer.
type Options struct {
	Repository      string        // GIT_REPOSITORY
	Branch          string        // GIT_BRANCH
	Window          time.Duration // GIT_COMMIT_WINDOW
	Author          string        // GIT_AUTHOR: "name <email>"
	Workdir         string        // GIT_WORKDIR; empty: a temporary clone
	SSHKeyFile      string        // GIT_SSH_KEY_FILE
	CredentialsFile string        // GIT_CREDENTIALS_FILE
	Poll            time.Duration // how often the bucket is listed
	// IncludePlaintextSecrets puts Secrets stored in the clear into the
	// repository; off, only encrypted ones go in.
	IncludePlaintextSecrets bool
	Layout                  object.Layout
	// Journal is where the change journal is read (nil: a store without
	// one, listed in full at every poll); Signer and AcceptUnsigned check
	// its objects.
	Journal        journal.Source
	Signer         *object.Signer
	AcceptUnsigned bool
	// Repair is how often every version is listed and the tree compared
	// with the bucket (0: every 10 minutes).
	Repair time.Duration
	Log    *zap.Logger
	// Pushed, when set, is called after each successful push; Failed
	// after each failed sync or push.
	Pushed func(time.Time)
	Failed func(error)
}

// Syncer keeps one branch in step with one cluster's prefix.
type Syncer struct {
	opts   Options
	reader restore.Reader
	git    *git
	dir    string
	synced time.Time // newest version time committed
	// unpushed: commits made that no push has taken yet.
	unpushed bool

	// Following the journal: the last journal object read, the newest
	// through time of those read, the keys named whose versions are not
	// all committed yet, and when every version was last listed.
	after    string
	through  time.Time
	dirty    map[string]bool
	lastFull time.Time
	// plainSecrets are keys whose current version (by ETag) is a Secret
	// in the clear, left out: a repair does not read them again.
	plainSecrets map[string]string
}

// New returns a Syncer of the cluster prefix opts.Layout names, read
// through reader.
func New(reader restore.Reader, opts Options) (*Syncer, error) {
	if opts.Branch == "" {
		opts.Branch = "main"
	}
	if opts.Window <= 0 {
		opts.Window = 10 * time.Second
	}
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	if opts.Author == "" {
		opts.Author = "cluster-backup <cluster-backup@localhost>"
	}
	if opts.Repair <= 0 {
		opts.Repair = 10 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	dir := opts.Workdir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "cluster-backup-git-")
		if err != nil {
			return nil, err
		}
		dir = tmp
	}
	return &Syncer{opts: opts, reader: reader, dir: dir, git: newGit(dir, opts), dirty: map[string]bool{}, plainSecrets: map[string]string{}}, nil
}

// Prepare makes the working clone (Run does it first, retried each poll
// until it succeeds): see prepare.
func (s *Syncer) Prepare(ctx context.Context) error { return s.prepare(ctx) }

// prepare makes the working clone: shallow (depth 1) from the remote
// branch, or a new repository when the branch does not exist yet. A
// persistent Workdir is reset to the remote branch, whose last trailer
// says where to resume.
func (s *Syncer) prepare(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.dir, ".git")); err != nil {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return err
		}
		if _, err := s.git.run(ctx, time.Time{}, "init", "-q", "-b", s.opts.Branch); err != nil {
			return err
		}
		if _, err := s.git.run(ctx, time.Time{}, "remote", "add", "origin", s.opts.Repository); err != nil {
			return err
		}
	}
	name, email := splitAuthor(s.opts.Author)
	for _, kv := range [][2]string{{"user.name", name}, {"user.email", email}, {"commit.gpgsign", "false"}} {
		if _, err := s.git.run(ctx, time.Time{}, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	exists, err := s.fetch(ctx, true)
	if err != nil {
		return err
	}
	if !exists {
		s.opts.Log.Info("Git branch does not exist yet: the whole history is backfilled",
			zap.String("branch", s.opts.Branch))
		return nil
	}
	if _, err := s.git.run(ctx, time.Time{}, "reset", "-q", "--hard", "origin/"+s.opts.Branch); err != nil {
		return err
	}
	s.synced, err = s.resumePoint(ctx)
	if err != nil {
		return err
	}
	s.opts.Log.Info("Git history resumes", zap.String("branch", s.opts.Branch), zap.Time("synced_through", s.synced))
	return nil
}

// fetch fetches the remote branch, at depth 1 when shallow, else what the
// clone lacks down to the commits it has (what a rebase needs); exists is
// false when the remote has no such branch yet.
func (s *Syncer) fetch(ctx context.Context, shallow bool) (exists bool, err error) {
	args := append(credentialArgs(s.opts), "ls-remote", "--heads", "origin", s.opts.Branch)
	out, err := s.git.run(ctx, time.Time{}, args...)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(out) == "" {
		return false, nil
	}
	args = append(credentialArgs(s.opts), "fetch", "-q")
	if shallow {
		args = append(args, "--depth", "1")
	}
	args = append(args, "origin", "+refs/heads/"+s.opts.Branch+":refs/remotes/origin/"+s.opts.Branch)
	_, err = s.git.run(ctx, time.Time{}, args...)
	return err == nil, err
}

// resumePoint is the newest synced-through trailer on the branch, looked
// for in a deepening history when commits of others sit on top.
func (s *Syncer) resumePoint(ctx context.Context) (time.Time, error) {
	for depth := 1; ; depth *= 8 {
		out, err := s.git.run(ctx, time.Time{}, "log", "--format=%(trailers:key="+SyncedTrailer+",valueonly)", "origin/"+s.opts.Branch)
		if err != nil {
			return time.Time{}, err
		}
		for _, line := range strings.Split(out, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				return time.Parse(time.RFC3339Nano, line)
			}
		}
		shallow, _ := s.git.run(ctx, time.Time{}, "rev-parse", "--is-shallow-repository")
		if strings.TrimSpace(shallow) != "true" || depth > 4096 {
			return time.Time{}, nil // no commit of ours: backfill everything
		}
		args := append(credentialArgs(s.opts), "fetch", "-q", fmt.Sprintf("--deepen=%d", depth*8), "origin", s.opts.Branch)
		if _, err := s.git.run(ctx, time.Time{}, args...); err != nil {
			return time.Time{}, err
		}
	}
}

// Run syncs until ctx ends: the clone prepared, then a sync each Poll.
// Nothing stops it: a remote that cannot be reached or refuses the
// credentials is logged, counted (Failed) and tried again at the next
// poll.
func (s *Syncer) Run(ctx context.Context) error {
	prepared := false
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		var err error
		if !prepared {
			if err = s.prepare(ctx); err == nil {
				prepared = true
			}
		}
		if prepared {
			_, err = s.SyncOnce(ctx)
		}
		if err != nil && ctx.Err() == nil {
			s.opts.Log.Error("Git sync failed; retrying at the next poll", zap.Error(err))
			if s.opts.Failed != nil {
				s.opts.Failed(err)
			}
		}
	}, s.opts.Poll)
	return nil
}

// change is one version to commit.
type change struct {
	version object.Version
	key     object.Key
	path    string // below the cluster's root
}

// SyncOnce commits every settled version newer than the last one synced,
// a commit per window, and pushes; it returns the commits made. It lists
// every version at its first call and every Repair (or always, without a
// journal), else follows the journal.
func (s *Syncer) SyncOnce(ctx context.Context) (int, error) {
	full := s.opts.Journal == nil || s.lastFull.IsZero() || time.Since(s.lastFull) >= s.opts.Repair
	var (
		changes []change
		current []object.Version
		err     error
	)
	if full {
		changes, current, err = s.listAll(ctx)
	} else {
		changes, err = s.follow(ctx)
	}
	if err != nil {
		return 0, err
	}
	commits := 0
	for _, window := range windows(changes, s.opts.Window) {
		made, err := s.commit(ctx, window)
		if err != nil {
			return commits, err
		}
		if made {
			commits++
			s.unpushed = true
		}
		s.synced = window[len(window)-1].version.Time
	}
	if full {
		made, err := s.repair(ctx, current)
		if err != nil {
			return commits, err
		}
		if made {
			commits++
			s.unpushed = true
		}
	}
	if s.unpushed {
		// New commits, or commits an earlier push left behind.
		if err := s.push(ctx); err != nil {
			return commits, err
		}
	}
	return commits, nil
}

// listAll lists every version of the cluster: the changes newer than the
// last synced and old enough to have settled, oldest first, and each key's
// newest version at or before the last synced (what a repair compares the
// tree with). The journal is then followed from journalOverlap before the
// listing: a write the listing may not show (stored after it began, or
// stored before and not settled) is in a journal object taken after that.
func (s *Syncer) listAll(ctx context.Context) ([]change, []object.Version, error) {
	start := time.Now()
	versions, err := s.reader.Versions(ctx, s.opts.Layout.Root())
	if err != nil {
		return nil, nil, err
	}
	horizon := start.Add(-settle)
	out := s.newer(versions, horizon)
	var current []object.Version
	seen := map[string]bool{}
	for _, v := range versions { // each key's newest first
		if seen[v.Key] || v.Time.After(horizon) {
			continue
		}
		seen[v.Key] = true
		current = append(current, v)
	}
	if s.opts.Journal != nil {
		s.after, s.through = journal.Since(s.opts.Layout, start.Add(-journalOverlap)), time.Time{}
		clear(s.dirty)
	}
	s.lastFull = start
	return out, current, nil
}

// newer picks the versions of the layout newer than the last synced and
// not after horizon, oldest first.
func (s *Syncer) newer(versions []object.Version, horizon time.Time) []change {
	var out []change
	for _, v := range versions {
		k, ok := s.opts.Layout.Parse(v.Key)
		if !ok || !v.Time.After(s.synced) || v.Time.After(horizon) {
			continue
		}
		out = append(out, change{version: v, key: k, path: strings.TrimPrefix(v.Key, s.opts.Layout.Root())})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].version, out[j].version
		return a.Time.Before(b.Time) || a.Time.Equal(b.Time) && a.Key < b.Key
	})
	return out
}

// follow reads the journal objects written since the last poll and lists
// the versions of the keys they name: the changes newer than the last
// synced, up to the newest through time read (every write stored before
// it is named) and old enough to have settled. A key with a version past
// that stays named for the next poll.
func (s *Syncer) follow(ctx context.Context) ([]change, error) {
	err := journal.Read(ctx, s.opts.Journal, s.opts.Layout, s.after, s.opts.Signer, s.opts.AcceptUnsigned, func(key string, o journal.Object, err error) error {
		s.after = key
		if err != nil {
			// A forged or damaged journal object names nothing; the next
			// repair finds what it should have named.
			s.opts.Log.Error("A change journal object fails its check; skipped until the next full listing", zap.String("key", key), zap.Error(err))
			return nil
		}
		for _, e := range o.Entries {
			s.dirty[e.Key] = true
		}
		if o.Through.After(s.through) {
			s.through = o.Through
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	horizon := time.Now().Add(-settle)
	if s.through.Before(horizon) {
		horizon = s.through
	}
	keys := make([]string, 0, len(s.dirty))
	for k := range s.dirty {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	versions, err := s.versionsOf(ctx, keys, horizon)
	if err != nil {
		return nil, err
	}
	return s.newer(versions, horizon), nil
}

// versionsOf lists the versions of keys (below the cluster's root),
// keyListers at a time; a key with none after horizon is no longer dirty.
func (s *Syncer) versionsOf(ctx context.Context, keys []string, horizon time.Time) ([]object.Version, error) {
	var (
		mu       sync.Mutex
		versions []object.Version
		clean    []string
	)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(keyListers)
	for _, k := range keys {
		g.Go(func() error {
			key := s.opts.Layout.Root() + k
			all, err := s.reader.Versions(ctx, key)
			if err != nil {
				return err
			}
			pending := false
			mu.Lock()
			defer mu.Unlock()
			for _, v := range all {
				if v.Key != key { // a longer key the prefix also matched
					continue
				}
				versions = append(versions, v)
				pending = pending || v.Time.After(horizon)
			}
			if !pending {
				clean = append(clean, k)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, k := range clean {
		delete(s.dirty, k)
	}
	return versions, nil
}

// windows groups changes (oldest first) into windows of at most width
// from their first change; versions taken at the same instant are never
// split.
func windows(changes []change, width time.Duration) [][]change {
	var out [][]change
	start := 0
	for i := 1; i <= len(changes); i++ {
		if i == len(changes) || (changes[i].version.Time.Sub(changes[start].version.Time) >= width &&
			!changes[i].version.Time.Equal(changes[i-1].version.Time)) {
			out = append(out, changes[start:i])
			start = i
		}
	}
	return out
}

// commit writes one window's versions into the working tree and commits
// them dated at the window's last change, authored by the field manager of
// its last change that names one (else GIT_AUTHOR); made is false when the
// tree did not change.
func (s *Syncer) commit(ctx context.Context, window []change) (made bool, err error) {
	var lines []string
	author := ""
	for _, c := range window {
		line, manager, err := s.apply(ctx, c)
		if err != nil {
			return false, err
		}
		if line != "" {
			lines = append(lines, line)
			if manager != "" {
				author = manager
			}
		}
	}
	last := window[len(window)-1].version.Time
	// One change is its own subject; several are counted in the subject
	// and listed in the body.
	subject := ""
	if len(lines) > 1 {
		subject = fmt.Sprintf("%d changes in %s", len(lines), s.opts.Layout.Cluster)
	}
	return s.record(ctx, subject, lines, author, last, last)
}

// record commits the working tree with a message of subject (or the one
// line when there is no subject), lines and the synced-through trailer
// through, dated at, by author (a field manager; "" for GIT_AUTHOR); made
// is false when nothing changed.
func (s *Syncer) record(ctx context.Context, subject string, lines []string, author string, at, through time.Time) (made bool, err error) {
	if _, err := s.git.run(ctx, time.Time{}, "add", "-A"); err != nil {
		return false, err
	}
	if out, err := s.git.run(ctx, time.Time{}, "status", "--porcelain"); err != nil || strings.TrimSpace(out) == "" || len(lines) == 0 {
		return false, err
	}
	msg := lines[0] + "\n\n"
	if subject != "" {
		msg = subject + "\n\n" + strings.Join(lines, "\n") + "\n\n"
	}
	msg += SyncedTrailer + ": " + through.UTC().Format(time.RFC3339Nano) + "\n"
	msgFile := filepath.Join(s.dir, ".git", "CLUSTER_BACKUP_MSG")
	if err := os.WriteFile(msgFile, []byte(msg), 0o600); err != nil {
		return false, err
	}
	args := []string{"commit", "-q", "--no-verify", "-F", msgFile}
	if author != "" {
		args = append(args, "--author", managerAuthor(author))
	}
	if _, err := s.git.run(ctx, at, args...); err != nil {
		return false, err
	}
	return true, nil
}

// managerAuthor is the commit author of a field manager: its name, at a
// domain that cannot exist (RFC 2606), so no mail goes anywhere.
func managerAuthor(manager string) string {
	name := strings.Map(func(r rune) rune {
		if r == '<' || r == '>' || r < 0x20 {
			return -1
		}
		return r
	}, manager)
	local := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '-'
	}, name)
	return fmt.Sprintf("%s <%s@field-manager.invalid>", name, local)
}

// apply puts one version into the working tree and returns its line of
// the commit message (A, M or D, the type, the object, its
// resourceVersion, the bucket's version ID and the field manager) and the
// field manager; no line when the tree already holds it.
func (s *Syncer) apply(ctx context.Context, c change) (line, manager string, err error) {
	file := filepath.Join(s.dir, filepath.FromSlash(c.path))
	previous, _ := os.ReadFile(file)
	where := c.key.Name
	if c.key.Namespace != "" {
		where = c.key.Namespace + "/" + c.key.Name
	}
	remove := func(reason string) (string, string, error) {
		if previous == nil {
			return "", "", nil
		}
		if err := os.Remove(file); err != nil {
			return "", "", err
		}
		return fmt.Sprintf("D %s %s%s", typeOf(previous, c.key.Segment), where, reason), "", nil
	}
	if c.version.DeleteMarker {
		return remove(" version=" + c.version.ID)
	}
	body, meta, err := s.reader.Get(ctx, c.version.Key, c.version.ID)
	if errors.Is(err, object.ErrForged) || errors.Is(err, object.ErrUnsigned) {
		s.opts.Log.Error("A document fails its integrity check; left out of Git", zap.String("key", c.version.Key),
			zap.String("version_id", c.version.ID), zap.Error(err))
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read %s (version %s): %w", c.version.Key, c.version.ID, err)
	}
	if !s.opts.IncludePlaintextSecrets && plaintextSecret(body) {
		s.plainSecrets[c.version.Key] = c.version.ETag
		return remove(" (a Secret stored in the clear: left out of Git)")
	}
	delete(s.plainSecrets, c.version.Key)
	if bytes.Equal(previous, body) {
		return "", "", nil
	}
	op := "M"
	if previous == nil {
		op = "A"
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(file, body, 0o644); err != nil {
		return "", "", err
	}
	line = fmt.Sprintf("%s %s %s rv=%s version=%s", op, typeOf(body, c.key.Segment), where, meta.ResourceVersion, c.version.ID)
	if meta.Manager != "" {
		line += " by=" + meta.Manager
	}
	return line, meta.Manager, nil
}

// repair brings the tree in line with current, each key's newest version
// at or before the last synced: a file that differs from its version (by
// the MD5 the listing reports), one that is missing, and one whose key has
// no version (expired) or is deleted. Normally there is nothing to do; a
// journal that missed a write, or a commit of someone else on our paths,
// is repaired in one commit dated now.
func (s *Syncer) repair(ctx context.Context, current []object.Version) (made bool, err error) {
	var lines []string
	want := map[string]bool{}
	for _, v := range current {
		k, ok := s.opts.Layout.Parse(v.Key)
		if !ok || v.Time.After(s.synced) {
			continue
		}
		rel := strings.TrimPrefix(v.Key, s.opts.Layout.Root())
		if !v.DeleteMarker {
			want[rel] = true
		}
		body, err := os.ReadFile(filepath.Join(s.dir, filepath.FromSlash(rel)))
		switch {
		case v.DeleteMarker && err != nil:
			continue // deleted, and not in the tree
		case !v.DeleteMarker && err == nil && object.ETag(body) == v.ETag:
			continue // the tree holds it
		case !v.DeleteMarker && err != nil && s.plainSecrets[v.Key] == v.ETag:
			continue // a Secret in the clear, left out
		}
		line, _, err := s.apply(ctx, change{version: v, key: k, path: rel})
		if err != nil {
			return false, err
		}
		if line != "" {
			lines = append(lines, line)
		}
	}
	// Files of the layout whose key holds nothing any more.
	err = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(s.dir, p)
		rel = filepath.ToSlash(rel)
		if _, ok := s.opts.Layout.Parse(s.opts.Layout.Root() + rel); d.IsDir() || !ok || want[rel] {
			return nil
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		lines = append(lines, "D "+rel+" (no version of it is kept)")
		return nil
	})
	if err != nil {
		return false, err
	}
	if len(lines) > 0 {
		s.opts.Log.Warn("The repository differed from the bucket; repaired", zap.Int("objects", len(lines)))
	}
	return s.record(ctx, fmt.Sprintf("Repair: %d objects brought in line with the bucket", len(lines)), lines, "", time.Now(), s.synced)
}

// typeOf is a document's group/Kind (v1/ConfigMap for the core group);
// the layout's resource segment when the document cannot say.
func typeOf(body []byte, segment string) string {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if yaml.Unmarshal(body, &head) != nil || head.Kind == "" {
		return segment
	}
	group := path.Dir(head.APIVersion)
	if group == "." {
		group = head.APIVersion
	}
	return group + "/" + head.Kind
}

// plaintextSecret reports whether body is a Secret whose values are
// stored in the clear.
func plaintextSecret(body []byte) bool {
	var obj map[string]any
	if yaml.Unmarshal(body, &obj) != nil {
		return false
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	return encrypt.Applies(apiVersion, kind) && !encrypt.Encrypted(obj)
}

// push pushes the branch, fast-forward only. A rejection (commits made on
// the remote since) fetches them, rebases ours on top and tries again,
// with backoff.
func (s *Syncer) push(ctx context.Context) error {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 5, Cap: 30 * time.Second}
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		args := append(credentialArgs(s.opts), "push", "-q", "origin", "HEAD:refs/heads/"+s.opts.Branch)
		if _, last = s.git.run(ctx, time.Time{}, args...); last == nil {
			s.unpushed = false
			if s.opts.Pushed != nil {
				s.opts.Pushed(time.Now())
			}
			return true, nil
		}
		s.opts.Log.Warn("Git push rejected; rebasing on the remote branch", zap.Error(last))
		if s.opts.Failed != nil {
			s.opts.Failed(last)
		}
		if _, err := s.fetch(ctx, false); err != nil {
			last = err
			return false, nil
		}
		if _, err := s.git.run(ctx, time.Time{}, "rebase", "-q", "--committer-date-is-author-date", "-X", "theirs", "origin/"+s.opts.Branch); err != nil {
			_, _ = s.git.run(ctx, time.Time{}, "rebase", "--abort")
			last = err
		}
		return false, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("push to %s: %w", s.opts.Branch, last)
	}
	return err
}

// splitAuthor reads "name <email>".
func splitAuthor(author string) (name, email string) {
	name, email, ok := strings.Cut(author, "<")
	if !ok {
		return strings.TrimSpace(author), "cluster-backup@localhost"
	}
	return strings.TrimSpace(name), strings.TrimSuffix(strings.TrimSpace(email), ">")
}
