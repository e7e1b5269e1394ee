package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/cluster-backup/cluster-backup/logging"
	"github.com/cluster-backup/cluster-backup/object"
)

// The index carries what a listing of a store without user metadata in
// its listings (any S3 but MinIO) cannot: each object's fingerprint. It is
// one object beside the cluster's identity marker (object.Layout.IndexKey),
// zstd-compressed text, one line per key:
//
//	key <TAB> fingerprint <TAB> size <TAB> etag
//
// An entry counts only when the listing reports the same size and ETag for
// the key: an object changed by anyone else, or an index that is stale or
// missing, makes the entry unknown, and an unknown object is written again
// (a safe rewrite), never taken for unchanged.

// indexEntry is what the index knows of one key.
type indexEntry struct {
	sum  string // fingerprint, hex
	size int64
	etag string
}

var indexEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
var indexDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))

func encodeIndex(entries map[string]indexEntry) []byte {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	b.WriteString("# cluster-backup index: key, fingerprint, size, etag\n")
	for _, k := range keys {
		e := entries[k]
		fmt.Fprintf(&b, "%s\t%s\t%d\t%s\n", k, e.sum, e.size, e.etag)
	}
	return indexEncoder.EncodeAll(b.Bytes(), nil)
}

func decodeIndex(packed []byte) (map[string]indexEntry, error) {
	text, err := indexDecoder.DecodeAll(packed, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]indexEntry{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("index line %q: want 4 fields", line)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("index line %q: %w", line, err)
		}
		out[f[0]] = indexEntry{sum: f[1], size: size, etag: f[3]}
	}
	return out, sc.Err()
}

// loadIndex reads the index; a missing or damaged index, or one the
// Signer does not accept, is empty (every object without listed metadata
// is then written again once).
func (w *Writer) loadIndex(ctx context.Context) map[string]indexEntry {
	key := w.opts.Layout.IndexKey()
	body, meta, err := w.store.Get(ctx, key, "")
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			w.log.Warn("Cannot read the change index; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": key, "error": err.Error()}))
		}
		return nil
	}
	if err := w.opts.Signer.CheckBytes(key, body, meta.Integrity); err != nil {
		w.log.Warn("The change index is not signed with this installation's integrity key; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": key, "error": err.Error()}))
		return nil
	}
	idx, err := decodeIndex(body)
	if err != nil {
		w.log.Warn("The change index is damaged; objects without listed metadata are written again", logging.Op(logging.OpStoreList), logging.Data(map[string]any{"key": w.opts.Layout.IndexKey(), "error": err.Error()}))
		return nil
	}
	return idx
}

// known is the fingerprint of a listed key whose listing carries no
// metadata, when the index or the writer's own write of it vouches for its
// size and ETag; "" otherwise.
func known(s object.Stored, e indexEntry, ok bool) string {
	if !ok || s.ETag == "" || e.etag != s.ETag || e.size != s.Size {
		return ""
	}
	return e.sum
}

// Known is the fingerprint of a listed key: its metadata's, or, for a
// store whose listings carry none, what the writer knows it wrote there if
// the listing's size and ETag still match; "" when unknown. A pass compares
// caches with it.
func (w *Writer) Known(s object.Stored) string {
	if fp := s.Meta.Fingerprint(); fp != "" {
		return fp
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.hashes[s.Key]
	return known(s, indexEntry{sum: hex.EncodeToString(st.sum[:]), size: st.size, etag: st.etag}, ok && st.etag != "")
}

// SaveIndex writes the index when the store's listings carry no metadata
// and what the writer knows changed since it last wrote it. The service
// calls it after each pass and at shutdown.
func (w *Writer) SaveIndex(ctx context.Context) error {
	w.mu.Lock()
	if !w.bareListings || w.paused.Load() {
		w.mu.Unlock()
		return nil
	}
	entries := make(map[string]indexEntry, len(w.hashes))
	for k, st := range w.hashes {
		if st.etag != "" && st.sum != ([32]byte{}) {
			entries[k] = indexEntry{sum: hex.EncodeToString(st.sum[:]), size: st.size, etag: st.etag}
		}
	}
	w.mu.Unlock()
	body := encodeIndex(entries)
	sum := object.Digest(body)
	if sum == w.savedIndex {
		return nil
	}
	key := w.opts.Layout.IndexKey()
	if err := w.store.Put(ctx, key, body, object.Meta{SHA256: sum, Integrity: w.opts.Signer.SignBytes(key, body)}); err != nil {
		w.metrics.Error(logging.OpObjectWrite)
		return fmt.Errorf("write the change index: %w", err)
	}
	w.savedIndex = sum
	return nil
}
