// Package journal is the change journal the service writes beside a
// cluster's backup: which keys it wrote or deleted, when, at which
// resourceVersion and by which field manager. Readers that follow the
// backup (git-sync, the web view's timeline) list the journal from where
// they stopped instead of every version of every key, so what a poll costs
// grows with the changes since the last one, never with the objects kept.
//
// The journal is append-only: each flush writes one new object, never
// rewritten, so it stays valid under S3 Object Lock. Its objects live
// outside the cluster's root, under {prefix}/_journal/{cluster}/ (a
// cluster name is a DNS label, so no cluster is called _journal), so that
// the snapshot pass, which lists the root, never lists them. Each is named
// after the instant its entries were taken from the buffer, in a
// fixed-width UTC form, so that key order is time order and a listing that
// starts after a key returns what was written after it; every write the
// store completed before that instant is in that object or an earlier one.
//
// Format: the line "cluster-backup journal 1", a tab and the object's
// through time: every write the store took before it is in this object or
// an earlier one (the instant the entries were taken, or the start of the
// oldest write still in flight then, whichever is earlier). Then one line
// per write,
// tab-separated: time (RFC 3339, nanoseconds, UTC), operation (put or
// delete), the key below the cluster's root, the resourceVersion and the
// field manager (both possibly empty). An object carries the SHA-256 of its
// bytes and, with INTEGRITY_KEY, its tag (object.Signer.SignBytes).
//
// The journal says what changed; the bucket's versions stay the record of
// what each change was. It is written to S3 stores, not to a directory
// store, and it expires with the noncurrent versions it points at.
package journal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/cluster-backup/cluster-backup/object"
)

// Dir is the folder below BACKUP_PREFIX that holds every cluster's journal.
const Dir = "_journal"

const header = "cluster-backup journal 1"

// nameTime is the fixed-width form of an object's time: key order is time
// order.
const nameTime = "20060102T150405.000000000Z"

// Operations of an entry.
const (
	Put    = "put"
	Delete = "delete"
)

// Entry is one write of the service.
type Entry struct {
	Time            time.Time // when the store took it
	Op              string    // Put or Delete
	Key             string    // below the cluster's root: shop/configmaps/web.yaml
	ResourceVersion string
	Manager         string // the field manager of the change (object.Meta.Manager)
}

// Prefix is the key prefix, with trailing slash, of a cluster's journal.
func Prefix(l object.Layout) string {
	return path.Join(l.Prefix, Dir, l.Cluster) + "/"
}

// Name is the key of a journal object taken at t by instance.
func Name(l object.Layout, t time.Time, instance string) string {
	return Prefix(l) + t.UTC().Format(nameTime) + "-" + instance + ".tsv"
}

// Since is the listing position (a key to start after) of the journal's
// objects taken at or after t.
func Since(l object.Layout, t time.Time) string {
	return Prefix(l) + t.UTC().Add(-time.Nanosecond).Format(nameTime) + "~"
}

// TakenAt is when the object key was taken; false for a key that is not a
// journal object.
func TakenAt(key string) (time.Time, bool) {
	name := path.Base(key)
	if len(name) < len(nameTime) {
		return time.Time{}, false
	}
	t, err := time.Parse(nameTime, name[:len(nameTime)])
	return t, err == nil
}

// Object is one journal object.
type Object struct {
	// Through: every write the store took before it is in this object or
	// an earlier one.
	Through time.Time
	Entries []Entry
}

// Encode renders o as one journal object.
func Encode(o Object) []byte {
	var b bytes.Buffer
	b.WriteString(header + "\t" + o.Through.UTC().Format(time.RFC3339Nano) + "\n")
	entries := o.Entries
	for _, e := range entries {
		b.WriteString(e.Time.UTC().Format(time.RFC3339Nano))
		for _, f := range []string{e.Op, e.Key, e.ResourceVersion, e.Manager} {
			b.WriteByte('\t')
			b.WriteString(clean(f))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// clean keeps a field on its line: keys and field managers hold no tabs or
// line breaks, but the format must not depend on it.
func clean(f string) string {
	if strings.ContainsAny(f, "\t\n\r") {
		return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(f)
	}
	return f
}

// ErrFormat marks bytes that are not a journal object.
var ErrFormat = errors.New("not a journal object")

// Decode reads a journal object.
func Decode(body []byte) (Object, error) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	if !sc.Scan() {
		return Object{}, fmt.Errorf("%w: it does not start with %q", ErrFormat, header)
	}
	head, through, _ := strings.Cut(sc.Text(), "\t")
	t, err := time.Parse(time.RFC3339Nano, through)
	if head != header || err != nil {
		return Object{}, fmt.Errorf("%w: it does not start with %q and a time", ErrFormat, header)
	}
	out := Object{Through: t}
	for line := 2; sc.Scan(); line++ {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 {
			return Object{}, fmt.Errorf("%w: line %d has %d fields, want 5", ErrFormat, line, len(f))
		}
		t, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil || (f[1] != Put && f[1] != Delete) || f[2] == "" {
			return Object{}, fmt.Errorf("%w: line %d: %q", ErrFormat, line, sc.Text())
		}
		out.Entries = append(out.Entries, Entry{Time: t, Op: f[1], Key: f[2], ResourceVersion: f[3], Manager: f[4]})
	}
	return out, sc.Err()
}

// Source is a store the journal is read from (sink.MinIO).
type Source interface {
	// WalkAfter visits the keys under prefix that sort after after, in
	// key order.
	WalkAfter(ctx context.Context, prefix, after string, visit func(object.Stored) error) error
	Get(ctx context.Context, key, id string) ([]byte, object.Meta, error)
}

// Read visits the journal objects of l that sort after the key after, in
// order. Each is read and checked (its SHA-256, and its tag under signer
// unless unsigned ones are accepted); one that fails is passed to visit
// with the error (wrapping object.ErrForged, object.ErrUnsigned or
// ErrFormat) and no entries. An error of the store or of visit ends the
// walk.
func Read(ctx context.Context, src Source, l object.Layout, after string, signer *object.Signer, acceptUnsigned bool,
	visit func(key string, o Object, err error) error) error {
	if after == "" {
		after = Prefix(l)
	}
	return src.WalkAfter(ctx, Prefix(l), after, func(s object.Stored) error {
		if _, ok := TakenAt(s.Key); !ok {
			return nil
		}
		o, err := ReadObject(ctx, src, s.Key, signer, acceptUnsigned)
		if errors.Is(err, object.ErrNotFound) {
			return nil // expired between the listing and the read
		}
		if err != nil && !errors.Is(err, object.ErrForged) && !errors.Is(err, object.ErrUnsigned) && !errors.Is(err, ErrFormat) {
			return err
		}
		return visit(s.Key, o, err)
	})
}

// ReadObject reads and checks the journal object key: its SHA-256, and its
// tag under signer unless unsigned ones are accepted. What fails a check
// is an error wrapping object.ErrForged, object.ErrUnsigned or ErrFormat.
func ReadObject(ctx context.Context, src Source, key string, signer *object.Signer, acceptUnsigned bool) (Object, error) {
	body, meta, err := src.Get(ctx, key, "")
	if err != nil {
		return Object{}, err
	}
	if object.Digest(body) != meta.SHA256 {
		return Object{}, fmt.Errorf("%w: its bytes are not those of its sha256", object.ErrForged)
	}
	if err := signer.CheckBytes(key, body, meta.Integrity); err != nil && (!acceptUnsigned || !errors.Is(err, object.ErrUnsigned)) {
		return Object{}, err
	}
	return Decode(body)
}
