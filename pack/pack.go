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
// Format: the line "cluster-backup pack 4", then records of eleven fields,
// each a uvarint length and the bytes. A document's record holds its key,
// the eight fields of its stored metadata (object.Meta), the number of the
// dictionary its frame was compressed against (empty for none) and the
// frame (see Frame). A record with an empty key defines the next
// dictionary, numbered from 1, in its last field; its other fields are
// empty. It comes before the first frame that uses it. The documents are
// in key order (bytewise, the order of an S3 listing), so that a reader
// going through the keys in that order holds a few entries at a time.
// Packs of the third format ("cluster-backup pack 3": records without the
// field manager), of the second ("cluster-backup pack 2": records without
// the integrity field either, in any order) and of the first ("cluster-backup pack 1": eight fields,
// no dictionaries, each frame one zstd frame) are still read, for
// restores to a time they were written at.
package pack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/cluster-backup/cluster-backup/object"
)

const (
	magic   = "cluster-backup pack 4\n"
	magicV3 = "cluster-backup pack 3\n"
	magicV2 = "cluster-backup pack 2\n"
	magicV1 = "cluster-backup pack 1\n"
)

// ErrOrder is a document added out of key order.
var ErrOrder = errors.New("the restore pack's documents must be added in key order")

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
	last  string
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
// time it is used). Keys come in order, each after the one before
// (ErrOrder).
func (p *Writer) Add(key string, meta object.Meta, frame Frame) error {
	if p.err == nil && (key == "" || (p.n > 0 && key <= p.last)) {
		p.err = fmt.Errorf("%w: %q after %q", ErrOrder, key, p.last)
	}
	if p.err != nil {
		return p.err
	}
	p.last = key
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
	return []string{m.ResourceVersion, m.UID, m.APIVersion, m.SHA256, m.HMAC, m.ClusterUID, m.Integrity, m.Manager}
}

// Load reads a pack, keeping the entries of the keys want accepts. A pack
// that ends early or breaks the format returns the entries read before
// that with an error wrapping ErrDamaged.
func Load(r io.Reader, want func(key string) bool) (map[string]Entry, error) {
	pr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	out := map[string]Entry{}
	for {
		key, e, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if want(key) {
			out[key] = e
		}
	}
}

// Reader reads a pack entry by entry, in the order it was written.
type Reader struct {
	br      *bufio.Reader
	v1      bool
	sorted  bool // formats 3 and 4: in key order
	metas   int  // metadata fields per record
	last    string
	dicts   []*Dict
	records int
}

// NewReader starts reading the pack r; a stream that is not a pack is an
// error wrapping ErrDamaged.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrDamaged, strings.TrimSpace(magic))
	}
	// The metadata fields of each format: the field manager is the
	// fourth's, the integrity tag the third's.
	metas := map[string]int{magic: 8, magicV3: 7, magicV2: 6, magicV1: 6}[string(head)]
	if metas == 0 {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrDamaged, strings.TrimSpace(magic))
	}
	return &Reader{br: br, v1: string(head) == magicV1, sorted: metas >= 7, metas: metas}, nil
}

// Sorted says whether the pack's documents are in key order.
func (p *Reader) Sorted() bool { return p.sorted }

// Next returns the next document: its key and entry. It returns io.EOF at
// the pack's end, and an error wrapping ErrDamaged where the pack ends
// early or breaks the format.
func (p *Reader) Next() (string, Entry, error) {
	// key, the metadata fields, the dictionary (from the second format
	// on), the frame.
	metas := p.metas
	for {
		var f [11][]byte
		fields := f[:1+metas+1+1]
		if p.v1 {
			fields = f[:1+metas+1]
		}
		p.records++
		for i := range fields {
			b, err := readField(p.br, i == len(fields)-1)
			if errors.Is(err, io.EOF) && i == 0 {
				return "", Entry{}, io.EOF
			}
			if err != nil {
				return "", Entry{}, p.damaged(err)
			}
			fields[i] = b
		}
		frame := Frame{Bytes: fields[len(fields)-1]}
		if dict := fields[1+metas]; !p.v1 {
			if len(f[0]) == 0 {
				d, err := loadDict(frame.Bytes)
				if err != nil {
					return "", Entry{}, p.damaged(err)
				}
				p.dicts = append(p.dicts, d)
				continue
			}
			if len(dict) > 0 {
				n, err := strconv.Atoi(string(dict))
				if err != nil || n < 1 || n > len(p.dicts) {
					return "", Entry{}, p.damaged(fmt.Errorf("dictionary %q is not defined", dict))
				}
				frame.Dict = p.dicts[n-1]
			}
		}
		key := string(f[0])
		if p.sorted && p.last != "" && key <= p.last {
			return "", Entry{}, p.damaged(fmt.Errorf("%q after %q: not in key order", key, p.last))
		}
		p.last = key
		meta := object.Meta{
			ResourceVersion: string(f[1]), UID: string(f[2]), APIVersion: string(f[3]),
			SHA256: string(f[4]), HMAC: string(f[5]), ClusterUID: string(f[6]),
		}
		if metas >= 7 {
			meta.Integrity = string(f[7])
		}
		if metas >= 8 {
			meta.Manager = string(f[8])
		}
		return key, Entry{Meta: meta, frame: frame, zstd: p.v1}, nil
	}
}

func (p *Reader) damaged(err error) error {
	return fmt.Errorf("%w: record %d: %w", ErrDamaged, p.records, err)
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
	// Nothing is decompressed past the size the listing gives: a pack
	// written by anyone who can write the bucket could otherwise make each
	// entry allocate up to maxFrame.
	n, known, err := e.decodedLen()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", v.Key, ErrDamaged, err)
	}
	if known && n != v.Size {
		return nil, fmt.Errorf("%s: %w: the entry holds %d bytes, not %d", v.Key, ErrMismatch, n, v.Size)
	}
	var body []byte
	switch {
	case !e.zstd:
		body, err = e.frame.Decompress()
	case known:
		body, err = decoder.DecodeAll(e.frame.Bytes, make([]byte, 0, max(v.Size, 0)))
	default:
		// A zstd frame that does not say its size is read up to one byte
		// past the listed size, which is then a mismatch.
		body, err = readAtMost(e.frame.Bytes, v.Size+1)
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

// decodedLen is the length the entry's frame says it decompresses to;
// known is false for a zstd frame that does not say.
func (e Entry) decodedLen() (n int64, known bool, err error) {
	if e.zstd {
		var h zstd.Header
		if err := h.Decode(e.frame.Bytes); err != nil {
			return 0, false, err
		}
		return int64(h.FrameContentSize), h.HasFCS, nil
	}
	l, err := s2.DecodedLen(e.frame.Bytes)
	return int64(l), true, err
}

// readAtMost decompresses the zstd frame b up to limit bytes.
func readAtMost(b []byte, limit int64) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxFrame))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(io.LimitReader(d, limit))
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
