package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/cluster-backup/cluster-backup/object"
)

var encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))

// Two dictionaries, as two types would have: documents go against the
// first, the second or none in turn.
var testDicts = []*Dict{NewDict(docs(1)[0].body), NewDict(append(docs(1)[0].body, "# another type\n"...)), nil}

type doc struct {
	key  string
	body []byte
	meta object.Meta
}

func docs(n int) []doc {
	out := make([]doc, n)
	for i := range out {
		body := fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%d\n  namespace: ns\ndata:\n  k: \"%d\"\n", i, i*i)
		out[i] = doc{
			key:  fmt.Sprintf("clusterbackup/c/ns/configmaps/cm-%d.yaml", i),
			body: body,
			meta: object.Meta{ResourceVersion: fmt.Sprint(100 + i), UID: fmt.Sprintf("uid-%d", i), APIVersion: "v1", SHA256: object.Digest(body), ClusterUID: "cluster-uid", Integrity: fmt.Sprintf("k1.%064x", i), Manager: fmt.Sprintf("manager-%d", i%3)},
		}
	}
	slices.SortFunc(out, func(a, b doc) int { return strings.Compare(a.key, b.key) })
	return out
}

func write(t *testing.T, ds []doc) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i, d := range ds {
		if err := w.Add(d.key, d.meta, Compress(nil, d.body, testDicts[i%len(testDicts)])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Len() != len(ds) {
		t.Fatalf("Len = %d, want %d", w.Len(), len(ds))
	}
	return buf.Bytes()
}

// writeV1 writes a pack of the first format: eight fields per record, each
// frame one zstd frame.
func writeV1(ds []doc) []byte {
	return writeOld(magicV1, 6, ds, func(body []byte) [][]byte { return [][]byte{encoder.EncodeAll(body, nil)} })
}

// writeV2 writes a pack of the second format: no integrity field, any
// order.
func writeV2(ds []doc) []byte {
	return writeOld(magicV2, 6, ds, func(body []byte) [][]byte { return [][]byte{nil, Compress(nil, body, nil).Bytes} })
}

// writeV3 writes a pack of the third format: no field manager.
func writeV3(ds []doc) []byte {
	return writeOld(magicV3, 7, ds, func(body []byte) [][]byte { return [][]byte{nil, Compress(nil, body, nil).Bytes} })
}

// writeOld writes the records of ds in their order, each its key, the
// first metas metadata fields (those of an older format) and the fields
// last makes of its body.
func writeOld(magic string, metas int, ds []doc, last func(body []byte) [][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(magic)
	for _, d := range ds {
		fields := append([]string{d.key}, metaFields(d.meta)[:metas]...)
		for _, f := range fields {
			buf.Write(binary.AppendUvarint(nil, uint64(len(f))))
			buf.WriteString(f)
		}
		for _, f := range last(d.body) {
			buf.Write(binary.AppendUvarint(nil, uint64(len(f))))
			buf.Write(f)
		}
	}
	return buf.Bytes()
}

func version(d doc) object.Version {
	return object.Version{Key: d.key, ID: "v1", Size: int64(len(d.body)), ETag: object.ETag(d.body)}
}

func all(string) bool { return true }

func TestRoundTrip(t *testing.T) {
	ds := docs(50)
	entries, err := Load(bytes.NewReader(write(t, ds)), all)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(ds) {
		t.Fatalf("loaded %d entries, want %d", len(entries), len(ds))
	}
	for _, d := range ds {
		e := entries[d.key]
		if e.Meta != d.meta {
			t.Errorf("%s: meta %+v, want %+v", d.key, e.Meta, d.meta)
		}
		body, err := e.Body(version(d))
		if err != nil || !bytes.Equal(body, d.body) {
			t.Errorf("%s: Body = %q, %v; want the stored bytes", d.key, body, err)
		}
	}
}

func TestFirstFormatIsRead(t *testing.T) {
	ds := docs(20)
	entries, err := Load(bytes.NewReader(writeV1(ds)), all)
	if err != nil || len(entries) != len(ds) {
		t.Fatalf("loaded %d entries, %v; want %d", len(entries), err, len(ds))
	}
	for _, d := range ds {
		body, err := entries[d.key].Body(version(d))
		want := d.meta
		want.Integrity, want.Manager = "", "" // fields of the third and fourth formats
		if err != nil || !bytes.Equal(body, d.body) || entries[d.key].Meta != want {
			t.Errorf("%s: Body = %q, %v, meta %+v; want the stored bytes and %+v", d.key, body, err, entries[d.key].Meta, want)
		}
	}
}

func TestThirdFormatIsRead(t *testing.T) {
	ds := docs(20)
	r, err := NewReader(bytes.NewReader(writeV3(ds)))
	if err != nil || !r.Sorted() {
		t.Fatalf("a pack of the third format: sorted %v, %v", r != nil && r.Sorted(), err)
	}
	entries, err := Load(bytes.NewReader(writeV3(ds)), all)
	if err != nil || len(entries) != len(ds) {
		t.Fatalf("loaded %d entries, %v; want %d", len(entries), err, len(ds))
	}
	for _, d := range ds {
		body, err := entries[d.key].Body(version(d))
		want := d.meta
		want.Manager = "" // a field of the fourth format
		if err != nil || !bytes.Equal(body, d.body) || entries[d.key].Meta != want {
			t.Errorf("%s: Body = %q, %v, meta %+v; want the stored bytes and %+v", d.key, body, err, entries[d.key].Meta, want)
		}
	}
}

func TestEachDictionaryIsWrittenOnce(t *testing.T) {
	ds := docs(30)
	packed := write(t, ds)
	// A dictionary record is an empty key followed by eight empty fields
	// and an empty dictionary number.
	if n := bytes.Count(packed, []byte{0, 0, 0, 0, 0, 0, 0, 0}); n != 2 {
		t.Errorf("%d dictionary records, want 2", n)
	}
	var plain bytes.Buffer
	w := NewWriter(&plain)
	for _, d := range ds {
		_ = w.Add(d.key, d.meta, Compress(nil, d.body, nil))
	}
	_ = w.Close()
	t.Logf("30 small documents: %d bytes with dictionaries, %d without", len(packed), plain.Len())
}

func TestUndefinedDictionaryIsDamage(t *testing.T) {
	ds := docs(2)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.Add(ds[0].key, ds[0].meta, Compress(nil, ds[0].body, nil))
	_ = w.Close()
	// The same record, naming dictionary 1, which no record defines.
	rec := buf.Bytes()[len(magic):]
	i := bytes.LastIndex(rec, []byte(ds[0].meta.Manager)) + len(ds[0].meta.Manager)
	bad := append([]byte(magic), rec[:i]...)
	bad = append(bad, 1, '1')
	bad = append(bad, rec[i+1:]...)
	got, err := Load(bytes.NewReader(bad), all)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), `dictionary "1" is not defined`) || len(got) != 0 {
		t.Errorf("an undefined dictionary: %d entries, %v; want ErrDamaged", len(got), err)
	}
}

func TestLoadKeepsOnlyWantedKeys(t *testing.T) {
	ds := docs(10)
	entries, err := Load(bytes.NewReader(write(t, ds)), func(k string) bool { return k == ds[3].key })
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[ds[3].key].Meta.UID != "uid-3" {
		t.Fatalf("entries = %v, want only %s", entries, ds[3].key)
	}
}

func TestBodyRefusesAnotherVersion(t *testing.T) {
	ds := docs(1)
	d := ds[0]
	e, err := Load(bytes.NewReader(write(t, ds)), all)
	if err != nil {
		t.Fatal(err)
	}
	changed := append(bytes.Clone(d.body), "# changed\n"...)
	for name, v := range map[string]object.Version{
		"the key was written again":  {Key: d.key, Size: int64(len(changed)), ETag: object.ETag(changed)},
		"same size, another MD5":     {Key: d.key, Size: int64(len(d.body)), ETag: object.ETag([]byte("other"))},
		"a multipart ETag":           {Key: d.key, Size: int64(len(d.body)), ETag: object.ETag(d.body)[:30] + "-2"},
		"no ETag in the listing":     {Key: d.key, Size: int64(len(d.body))},
		"the listed size is another": {Key: d.key, Size: 1, ETag: object.ETag(d.body)},
	} {
		if _, err := e[d.key].Body(v); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Body error = %v, want ErrMismatch", name, err)
		}
	}
	quoted := version(d)
	quoted.ETag = `"` + quoted.ETag + `"`
	if _, err := e[d.key].Body(quoted); err != nil {
		t.Errorf("a quoted ETag: %v", err)
	}
}

func TestBodyRefusesAlteredEntries(t *testing.T) {
	d := docs(1)[0]
	// The pack's bytes differ from what the store reports (MD5 and size
	// are the stored object's): the entry is not used.
	altered := d
	altered.body = bytes.ToUpper(d.body)
	e, err := Load(bytes.NewReader(write(t, []doc{altered})), all)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e[d.key].Body(version(d)); !errors.Is(err, ErrMismatch) {
		t.Errorf("altered bytes: %v, want ErrMismatch", err)
	}
	// The recorded SHA-256 is not that of the bytes.
	wrongSum := d
	wrongSum.meta.SHA256 = object.Digest([]byte("x"))
	if e, err = Load(bytes.NewReader(write(t, []doc{wrongSum})), all); err != nil {
		t.Fatal(err)
	}
	if _, err := e[d.key].Body(version(d)); !errors.Is(err, ErrMismatch) {
		t.Errorf("wrong sha256: %v, want ErrMismatch", err)
	}
	// Frames that do not decompress, on their own, against a dictionary
	// and in a pack of the first format.
	for _, dict := range []*Dict{nil, testDicts[0]} {
		for frame, want := range map[string]error{
			// The size it claims is the listed one; the rest is not s2.
			string(binary.AppendUvarint(nil, uint64(len(d.body)))) + "not a frame": ErrDamaged,
			// A frame that claims 4 GiB is refused before anything is
			// allocated for it.
			"\xff\xff\xff\xff\x0fnot a frame": ErrMismatch,
		} {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			_ = w.Add(d.key, d.meta, Frame{Bytes: []byte(frame), Dict: dict})
			_ = w.Close()
			if e, err = Load(&buf, all); err != nil {
				t.Fatal(err)
			}
			if _, err := e[d.key].Body(version(d)); !errors.Is(err, want) {
				t.Errorf("%q (dictionary %v): %v, want %v", frame, dict != nil, err, want)
			}
		}
	}
	v1 := writeV1([]doc{d})
	v1 = append(v1[:len(v1)-4], "nope"...)
	if e, err = Load(bytes.NewReader(v1), all); err != nil {
		t.Fatal(err)
	}
	if _, err := e[d.key].Body(version(d)); !errors.Is(err, ErrDamaged) {
		t.Errorf("not a zstd frame: %v, want ErrDamaged", err)
	}
}

func TestLoadDamagedPacks(t *testing.T) {
	ds := docs(5)
	full := write(t, ds)
	if _, err := Load(bytes.NewReader([]byte("PK\x03\x04 a zip")), all); !errors.Is(err, ErrDamaged) {
		t.Errorf("another format: %v, want ErrDamaged", err)
	}
	// Cut inside the last record: the first four are kept.
	got, err := Load(bytes.NewReader(full[:len(full)-3]), all)
	if !errors.Is(err, ErrDamaged) || len(got) != 4 {
		t.Errorf("truncated: %d entries, %v; want 4 and ErrDamaged", len(got), err)
	}
	// A length no record may have.
	huge := append(bytes.Clone(full), 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)
	got, err = Load(bytes.NewReader(huge), all)
	if !errors.Is(err, ErrDamaged) || len(got) != 5 {
		t.Errorf("oversized field: %d entries, %v; want 5 and ErrDamaged", len(got), err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(magic))
	f.Add([]byte(magic + "\x01k\x00\x00\x00\x00\x00\x00\x00\x04\x03abc"))
	f.Add([]byte(magicV1 + "\x01k\x00\x00\x00\x00\x00\x00\x03abc"))
	f.Add(write(&testing.T{}, docs(3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, _ := Load(bytes.NewReader(b), all)
		for k, e := range entries {
			_, _ = e.Body(object.Version{Key: k, Size: 3, ETag: object.ETag([]byte("abc"))})
		}
	})
}

func TestDictionaryOwnsItsSample(t *testing.T) {
	d := docs(2)
	sample := bytes.Clone(d[0].body)
	dict := NewDict(sample)
	frame := Compress(nil, d[1].body, dict)
	for i := range sample {
		sample[i] = 'x' // the caller reuses its buffer
	}
	if body, err := frame.Decompress(); err != nil || !bytes.Equal(body, d[1].body) {
		t.Errorf("after the sample's buffer was reused: %q, %v", body, err)
	}
	if NewDict([]byte("too short")) != nil {
		t.Error("a dictionary of 9 bytes")
	}
}

// TestPackIsInKeyOrder: the writer refuses a key out of order, a reader
// says a pack of the current format is sorted and refuses one whose keys
// are not, and a pack of the second format (any order) is still read.
func TestPackIsInKeyOrder(t *testing.T) {
	ds := docs(3)
	w := NewWriter(io.Discard)
	if err := w.Add(ds[1].key, ds[1].meta, Compress(nil, ds[1].body, nil)); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{ds[0].key, ds[1].key, ""} {
		if err := NewWriter(io.Discard).Add(key, ds[0].meta, Compress(nil, ds[0].body, nil)); key == "" && !errors.Is(err, ErrOrder) {
			t.Errorf("an empty key: %v, want ErrOrder", err)
		}
		if err := w.Add(key, ds[0].meta, Compress(nil, ds[0].body, nil)); !errors.Is(err, ErrOrder) {
			t.Errorf("%q after %q: %v, want ErrOrder", key, ds[1].key, err)
		}
	}

	sorted := write(t, ds)
	r, err := NewReader(bytes.NewReader(sorted))
	if err != nil || !r.Sorted() {
		t.Fatalf("a pack of the current format: sorted %v, %v", r != nil && r.Sorted(), err)
	}
	// The same records, the first two swapped: refused where the order
	// breaks; as a pack of the second format, read whole.
	swapped := append([]doc{ds[1], ds[0]}, ds[2:]...)
	var buf bytes.Buffer
	pw := NewWriter(&buf)
	for _, d := range swapped {
		pw.record(d.key, d.meta, "", Compress(nil, d.body, nil).Bytes)
	}
	_ = pw.Close()
	if got, err := Load(bytes.NewReader(buf.Bytes()), all); !errors.Is(err, ErrDamaged) || len(got) != 1 {
		t.Errorf("a pack of the current format out of order: %d entries, %v; want 1 and ErrDamaged", len(got), err)
	}
	v2 := writeV2(swapped)
	r, err = NewReader(bytes.NewReader(v2))
	if err != nil || r.Sorted() {
		t.Fatalf("a pack of the second format: sorted %v, %v", r != nil && r.Sorted(), err)
	}
	if got, err := Load(bytes.NewReader(v2), all); err != nil || len(got) != len(ds) {
		t.Errorf("a pack of the second format in any order: %d entries, %v; want %d", len(got), err, len(ds))
	}
}
