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
// Format: the line "cluster-backup pack 2", then records of nine fields,
// each a uvarint length and the bytes. A document's record holds its key,
// the six fields of its stored metadata (object.Meta), the number of the
// dictionary its frame was compressed against (empty for none) and the
// frame (see Frame). A record with an empty key defines the next
// dictionary, numbered from 1, in its last field; its other fields are
// empty. It comes before the first frame that uses it. Packs of the first
// format ("cluster-backup pack 1": eight fields, no dictionaries, each
// frame one zstd frame) are still read, for restores to a time they were
// written at.
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
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/cluster-backup/cluster-backup/object"
)

const (
	magic   = "cluster-backup pack 2\n"
	magicV1 = "cluster-backup pack 1\n"
)

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
	frame Frame // read through Body, which knows the format
	zstd  bool  // a pack of the first format: frame.Bytes is a zstd frame
}

// Writer writes a pack record by record.
type Writer struct {
	w     *bufio.Writer
	n     int
	dicts map[*Dict]int // the dictionaries written, by number
	err   error
}

// NewWriter starts a pack on w.
func NewWriter(w io.Writer) *Writer {
	p := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	_, p.err = p.w.WriteString(magic)
	return p
}

// Add appends one document: its key, the metadata it is stored with, and
// its stored bytes compressed (after the dictionary of the frame, the first
// time it is used).
func (p *Writer) Add(key string, meta object.Meta, frame Frame) error {
	dict := ""
	if frame.Dict != nil {
		n, ok := p.dicts[frame.Dict]
		if !ok {
			if p.dicts == nil {
				p.dicts = map[*Dict]int{}
			}
			n = len(p.dicts) + 1
			p.dicts[frame.Dict] = n
			p.record("", object.Meta{}, "", frame.Dict.bytes())
		}
		dict = strconv.Itoa(n)
	}
	p.record(key, meta, dict, frame.Bytes)
	if p.err == nil {
		p.n++
	}
	return p.err
}

func (p *Writer) record(key string, meta object.Meta, dict string, last []byte) {
	p.field([]byte(key))
	for _, f := range metaFields(meta) {
		p.field([]byte(f))
	}
	p.field([]byte(dict))
	p.field(last)
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
	if _, err := io.ReadFull(br, head); err != nil || (string(head) != magic && string(head) != magicV1) {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrDamaged, strings.TrimSpace(magic))
	}
	v1 := string(head) == magicV1
	var dicts []*Dict
	out := map[string]Entry{}
	damaged := func(err error) (map[string]Entry, error) {
		return out, fmt.Errorf("%w: record %d: %w", ErrDamaged, len(out)+len(dicts)+1, err)
	}
	for {
		var f [9][]byte // key, metaFields, dictionary, frame
		fields := f[:]
		if v1 {
			fields = f[:8] // no dictionary: the frame is f[7]
		}
		for i := range fields {
			b, err := readField(br, i == len(fields)-1)
			if errors.Is(err, io.EOF) && i == 0 {
				return out, nil
			}
			if err != nil {
				return damaged(err)
			}
			fields[i] = b
		}
		frame := Frame{Bytes: fields[len(fields)-1]}
		if !v1 && len(f[0]) == 0 {
			d, err := loadDict(frame.Bytes)
			if err != nil {
				return damaged(err)
			}
			dicts = append(dicts, d)
			continue
		}
		if !v1 && len(f[7]) > 0 {
			n, err := strconv.Atoi(string(f[7]))
			if err != nil || n < 1 || n > len(dicts) {
				return damaged(fmt.Errorf("dictionary %q is not defined", f[7]))
			}
			frame.Dict = dicts[n-1]
		}
		if key := string(f[0]); want(key) {
			out[key] = Entry{
				Meta: object.Meta{
					ResourceVersion: string(f[1]), UID: string(f[2]), APIVersion: string(f[3]),
					SHA256: string(f[4]), HMAC: string(f[5]), ClusterUID: string(f[6]),
				},
				frame: frame,
				zstd:  v1,
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

// decoder decompresses the entries of packs of the first format; it is
// safe for concurrent use.
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
	var body []byte
	var err error
	if e.zstd {
		body, err = decoder.DecodeAll(e.frame.Bytes, make([]byte, 0, max(v.Size, 0)))
	} else {
		body, err = e.frame.Decompress()
	}
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
func Save(ctx context.Context, s Streamer, key string, each func(add func(key string, meta object.Meta, frame Frame) error) error) (Stats, error) {
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
