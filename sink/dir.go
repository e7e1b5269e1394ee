package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cluster-backup/cluster-backup/object"
)

// Dir stores objects as files under a root directory with the same key
// layout as the bucket, for clusters that back up to a volume.
//
// A file system has no user metadata, so each object's metadata is kept
// alongside it in a hidden file (.name.yaml.meta, JSON). List computes the
// SHA-256 from the file itself rather than trusting the sidecar, so a file
// edited by hand is repaired by the next snapshot pass.
type Dir struct {
	root string
}

// NewDir returns a store rooted at root, creating it if needed.
func NewDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
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
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	sidecar, err := json.Marshal(meta.Map())
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := writeAtomic(metaPath(p), sidecar); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := writeAtomic(p, body); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func metaPath(p string) string {
	return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".meta")
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
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
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
	if err := os.Remove(metaPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or gone
		}
	}
	return nil
}

// List walks the tree under prefix.
func (d *Dir) List(ctx context.Context, prefix string) ([]object.Stored, error) {
	var out []object.Stored
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			return nil // sidecars and temporary files
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var md map[string]string
		if b, err := os.ReadFile(metaPath(p)); err == nil {
			_ = json.Unmarshal(b, &md) // a damaged sidecar only loses metadata
		}
		meta := object.MetaFromMap(md)
		meta.SHA256 = object.Digest(body)
		out = append(out, object.Stored{Key: key, Meta: meta})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	return out, nil
}
