package sink

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
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
