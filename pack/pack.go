// Package pack owns the restore pack: the documents of a cluster's backup
// gathered in one object beside it (object.Layout.PackKey), so that a
// restore or a diff reads one object instead of one per document. The pack
// only speeds reading up: every entry is checked against the listing of
// the version a restore chose (size and ETag, the MD5 an S3 store reports
// for a plain PUT) and against its recorded SHA-256 before it is used, and
// anything that does not match (an object changed since the pack was
// written, an altered file, a damaged pack, a store whose ETags are not
// MD5s) is read from its own key as before.
//
// Format: the line "cluster-backup pack 1", then one record per document:
// its key, the six fields of its stored metadata (object.Meta) and the
// stored bytes as one zstd frame, each a uvarint length and the bytes.
package pack

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/cluster-backup/cluster-backup/object"
)

const magic = "cluster-backup pack 1\n"

// Limits of one record, so that a damaged pack cannot make a reader
// allocate without bound.
const (
	maxField = 1 << 16
	maxFrame = 1 << 26
)

// ErrDamaged marks a pack that is not in the format above.
var ErrDamaged = errors.New("the restore pack is damaged")

// Entry is one document of a pack.
type Entry struct {
	Meta  object.Meta
	Frame []byte // the stored bytes, one zstd frame
}

// Writer writes a pack record by record.
type Writer struct {
	w   *bufio.Writer
	n   int
	err error
}

// NewWriter starts a pack on w.
func NewWriter(w io.Writer) *Writer {
	p := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	_, p.err = p.w.WriteString(magic)
	return p
}

// Add appends one document: its key, the metadata it is stored with, and
// its stored bytes as one zstd frame.
func (p *Writer) Add(key string, meta object.Meta, frame []byte) error {
	p.field([]byte(key))
	for _, f := range metaFields(meta) {
		p.field([]byte(f))
	}
	p.field(frame)
	if p.err == nil {
		p.n++
	}
	return p.err
}

func (p *Writer) field(b []byte) {
	if p.err != nil {
		return
	}
	var n [binary.MaxVarintLen64]byte
	if _, p.err = p.w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))]); p.err == nil {
		_, p.err = p.w.Write(b)
	}
}

// Len is the number of documents added.
func (p *Writer) Len() int { return p.n }

// Close writes what is buffered.
func (p *Writer) Close() error {
	if p.err != nil {
		return p.err
	}
	return p.w.Flush()
}

// metaFields are the stored metadata in record order, after the key.
func metaFields(m object.Meta) []string {
	return []string{m.ResourceVersion, m.UID, m.APIVersion, m.SHA256, m.HMAC, m.ClusterUID}
}

// Load reads a pack, keeping the entries of the keys want accepts. A pack
// that ends early or breaks the format returns the entries read before
// that with an error wrapping ErrDamaged.
func Load(r io.Reader, want func(key string) bool) (map[string]Entry, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(br, head); err != nil || string(head) != magic {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrDamaged, strings.TrimSpace(magic))
	}
	out := map[string]Entry{}
	for {
		var f [8][]byte // key, metaFields, frame
		for i := range f {
			b, err := readField(br, i == len(f)-1)
			if errors.Is(err, io.EOF) && i == 0 {
				return out, nil
			}
			if err != nil {
				return out, fmt.Errorf("%w: record %d: %w", ErrDamaged, len(out)+1, err)
			}
			f[i] = b
		}
		if key := string(f[0]); want(key) {
			out[key] = Entry{
				Meta: object.Meta{
					ResourceVersion: string(f[1]), UID: string(f[2]), APIVersion: string(f[3]),
					SHA256: string(f[4]), HMAC: string(f[5]), ClusterUID: string(f[6]),
				},
				Frame: f[7],
			}
		}
	}
}

// readField reads one length-prefixed field; frame allows the larger limit.
func readField(br *bufio.Reader, frame bool) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	limit := uint64(maxField)
	if frame {
		limit = maxFrame
	}
	if n > limit {
		return nil, fmt.Errorf("a field of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}

// ErrMismatch marks an entry that is not the version a reader chose.
var ErrMismatch = errors.New("the restore pack holds another version")

// decoder decompresses entries; it is safe for concurrent use.
var decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxFrame))

// Body is the entry's stored bytes if they are those of version v: the
// same size, their MD5 equal to v's ETag, their SHA-256 equal to the
// recorded one. Anything else is an error wrapping ErrMismatch, and the
// caller reads v from its own key.
func (e Entry) Body(v object.Version) ([]byte, error) {
	etag, ok := md5ETag(v.ETag)
	if !ok || e.Meta.SHA256 == "" {
		// Not a plain MD5 (a multipart or KMS-encrypted object, or a
		// store that keeps none): nothing binds the entry to v.
		return nil, fmt.Errorf("%s: %w: the store reports no MD5 of it", v.Key, ErrMismatch)
	}
	body, err := decoder.DecodeAll(e.Frame, make([]byte, 0, max(v.Size, 0)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", v.Key, ErrDamaged, err)
	}
	sum := md5.Sum(body) //nolint:gosec // compared with the S3 entity tag
	if int64(len(body)) != v.Size || hex.EncodeToString(sum[:]) != etag || object.Digest(body) != e.Meta.SHA256 {
		return nil, fmt.Errorf("%s: %w", v.Key, ErrMismatch)
	}
	return body, nil
}

// Checkable says whether an entry can be checked against a version listed
// with etag: only an ETag that is the MD5 of the bytes binds the two.
func Checkable(etag string) bool {
	_, ok := md5ETag(etag)
	return ok
}

// md5ETag is etag as lower-case hex when it is an MD5, unquoted.
func md5ETag(etag string) (string, bool) {
	etag = strings.ToLower(strings.Trim(etag, `"`))
	if _, err := hex.DecodeString(etag); err != nil || len(etag) != 2*md5.Size {
		return "", false
	}
	return etag, true
}

// Streamer writes an object from a stream without holding it in memory
// (sink.MinIO).
type Streamer interface {
	PutStream(ctx context.Context, key string, r io.Reader) error
}

// Stats describe a pack written by Save.
type Stats struct {
	Documents int
	Bytes     int64
}

// Save streams a pack to key in s. each calls add once per document.
func Save(ctx context.Context, s Streamer, key string, each func(add func(key string, meta object.Meta, frame []byte) error) error) (Stats, error) {
	pr, pw := io.Pipe()
	var st Stats
	done := make(chan struct{})
	go func() {
		defer close(done)
		counted := &countingWriter{w: pw}
		w := NewWriter(counted)
		err := each(w.Add)
		if err == nil {
			err = w.Close()
		}
		st = Stats{Documents: w.Len(), Bytes: counted.n}
		pw.CloseWithError(err) // nil: the upload sees the end
	}()
	err := s.PutStream(ctx, key, pr)
	pr.CloseWithError(errors.Join(err, errors.New("the upload ended"))) // stops each when the upload failed
	<-done
	return st, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
