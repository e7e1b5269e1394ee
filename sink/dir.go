package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

// Dir stores objects as files under a root directory with the same key
// layout as the bucket, for clusters that back up to a volume.
//
// A file system has no user metadata, so each object's metadata is kept
// beside it in a hidden folder (.meta/name.yaml, JSON): the sidecar's name
// is no longer than the document's, so every name that fits in a file name
// has its metadata too. List computes the SHA-256 from the file itself
// rather than trusting the sidecar, so a file edited by hand is repaired by
// the next snapshot pass. It lists every document it writes, whatever its
// name (object names may start with a dot).
type Dir struct {
	root string
}

// NewDir returns a store rooted at root, creating it if needed.
func NewDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create backup dir: %w", err)
	}
	return &Dir{root: filepath.Clean(root)}, nil
}

func (d *Dir) path(key string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(key))
	if filepath.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) || clean == ".." {
		return "", fmt.Errorf("key %q escapes the backup dir: %w", key, ErrPermanent)
	}
	return filepath.Join(d.root, clean), nil
}

// Put writes the metadata, then the document, each through a temporary file
// and a rename, so a reader or a crash never sees half a document.
func (d *Dir) Put(_ context.Context, key string, body []byte, meta object.Meta) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(metaPath(p)), 0o700); err != nil {
		return fmt.Errorf("put %s: %w", key, classify(err))
	}
	sidecar, err := json.Marshal(meta.Map())
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := writeAtomic(metaPath(p), sidecar); err != nil {
		return fmt.Errorf("put %s: %w", key, classify(err))
	}
	if err := writeAtomic(p, body); err != nil {
		return fmt.Errorf("put %s: %w", key, classify(err))
	}
	return nil
}

// metaDir holds the sidecars of the documents in its parent folder.
const metaDir = ".meta"

func metaPath(p string) string {
	return filepath.Join(filepath.Dir(p), metaDir, filepath.Base(p))
}

// legacyMetaPath is where earlier versions kept a document's sidecar.
func legacyMetaPath(p string) string {
	return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".meta")
}

// classify marks names the file system can never hold as unstorable.
func classify(err error) error {
	if errors.Is(err, syscall.ENAMETOOLONG) {
		return fmt.Errorf("%w: %w", ErrUnstorable, err)
	}
	return err
}

func writeAtomic(p string, body []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// CreateTemp made the file 0600: only the service reads what it holds.
	return os.Rename(tmp.Name(), p)
}

// Delete removes the file and any directories it leaves empty.
func (d *Dir) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for _, sidecar := range []string{metaPath(p), legacyMetaPath(p)} {
		// A legacy sidecar name can be too long to exist at all.
		if err := os.Remove(sidecar); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENAMETOOLONG) {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	_ = os.Remove(filepath.Dir(metaPath(p))) // when it is empty
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or gone
		}
	}
	return nil
}

// WalkAfter visits the keys under prefix that sort after after, in key
// order (a directory store lists them all and keeps those).
func (d *Dir) WalkAfter(ctx context.Context, prefix, after string, visit func(object.Stored) error) error {
	var keys []string
	err := d.keys(ctx, prefix, func(key, _ string) error {
		if key > after {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := visit(object.Stored{Key: k}); err != nil {
			return err
		}
	}
	return nil
}

// Folders lists the folders directly under prefix.
func (d *Dir) Folders(_ context.Context, prefix string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, filepath.FromSlash(prefix)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, classify(err))
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != metaDir {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Versions lists the documents under prefix, one version each (a
// directory keeps no history), timed by their modification time.
func (d *Dir) Versions(ctx context.Context, prefix string) ([]object.Version, error) {
	stored, err := List(ctx, d, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]object.Version, 0, len(stored))
	for _, s := range stored {
		p, err := d.path(s.Key)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue // deleted since the walk
		}
		out = append(out, object.Version{Key: s.Key, Time: fi.ModTime(), Size: fi.Size()})
	}
	return out, nil
}

// Get reads a document and the metadata recorded when it was written (its
// sidecar, not a digest of the file as it is now, so that an altered file
// shows). A directory keeps one version: id must be empty.
func (d *Dir) Get(_ context.Context, key, id string) ([]byte, object.Meta, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, object.Meta{}, err
	}
	if id != "" {
		return nil, object.Meta{}, fmt.Errorf("get %s version %s: a directory keeps no versions: %w", key, id, ErrNotFound)
	}
	body, meta, _, err := readDocument(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, object.Meta{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	} else if err != nil {
		return nil, object.Meta{}, fmt.Errorf("get %s: %w", key, classify(err))
	}
	return body, meta, nil
}

// readDocument reads the document at p and its sidecar. Put replaces the
// two files one after the other, so a read between the two renames (by this
// process or another: cluster-backup adopt writing the identity marker the
// service polls) finds one version's body beside the other's metadata. The
// sidecar's digest of the body tells, and the pair is read again until it
// agrees, for at most tornWait: a digest that still does not match is a
// document edited by hand, returned as it is. sum is the body's digest.
func readDocument(p string) ([]byte, object.Meta, string, error) {
	deadline := time.Now().Add(tornWait)
	for {
		body, err := os.ReadFile(p)
		if err != nil {
			return nil, object.Meta{}, "", err
		}
		var md map[string]string
		if b, err := os.ReadFile(metaPath(p)); err == nil {
			_ = json.Unmarshal(b, &md) // a damaged sidecar only loses metadata
		}
		meta, sum := object.MetaFromMap(md), object.Digest(body)
		if meta.SHA256 == "" || meta.SHA256 == sum || time.Now().After(deadline) {
			return body, meta, sum, nil
		}
		time.Sleep(time.Millisecond) // a Put in flight ends in far less
	}
}

// tornWait bounds the reads again of a document whose body and sidecar
// disagree.
const tornWait = 100 * time.Millisecond

// Walk visits the documents under prefix.
func (d *Dir) Walk(ctx context.Context, prefix string, visit func(object.Stored) error) error {
	return d.keys(ctx, prefix, func(key, p string) error {
		_, meta, sum, err := readDocument(p)
		if err != nil {
			return err
		}
		if sum != meta.SHA256 {
			// Edited by hand: a keyed digest from the sidecar no longer
			// describes it, so it is rewritten whatever it holds.
			meta.SHA256, meta.HMAC = sum, ""
		}
		return visit(object.Stored{Key: key, Meta: meta})
	})
}

// keys calls visit with the key and path of every document under prefix,
// walking only the folder the prefix names, without reading a file.
func (d *Dir) keys(ctx context.Context, prefix string, visit func(key, path string) error) error {
	start := d.root
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		start = filepath.Join(d.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() {
			if e.Name() == metaDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(e.Name(), ".yaml") {
			return nil // temporary files and legacy sidecars
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		return visit(key, p)
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return nil
}
