package sink

import (
	"fmt"
	"testing"

	"github.com/cluster-backup/cluster-backup/object"
)

func TestIndexRoundTrip(t *testing.T) {
	entries := map[string]indexEntry{
		"clusterbackup/c/default/configmaps/a.yaml":  {sum: object.Digest([]byte("a")), size: 1, etag: object.ETag([]byte("a"))},
		"clusterbackup/c/_cluster/namespaces/b.yaml": {sum: object.Digest([]byte("b")), size: 12, etag: object.ETag([]byte("b"))},
	}
	got, err := decodeIndex(encodeIndex(entries))
	if err != nil || len(got) != 2 || got["clusterbackup/c/default/configmaps/a.yaml"] != entries["clusterbackup/c/default/configmaps/a.yaml"] {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if _, err := decodeIndex([]byte("not zstd")); err == nil {
		t.Error("a damaged index decoded")
	}
}

// BenchmarkIndex50k reports what the index of 50,000 objects costs: its
// size in the store (the bytes a restart reads besides the listing) and
// the time to build and to read it.
func BenchmarkIndex50k(b *testing.B) {
	entries := map[string]indexEntry{}
	for i := range 50000 {
		body := []byte(fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%06d\n", i))
		key := fmt.Sprintf("clusterbackup/production-east/team-%02d/configmaps/cm-%06d.yaml", i%20, i)
		entries[key] = indexEntry{sum: object.Digest(body), size: int64(2048 + i%100), etag: object.ETag(body)}
	}
	var packed []byte
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			packed = encodeIndex(entries)
		}
		b.ReportMetric(float64(len(packed)), "index-bytes")
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeIndex(packed); err != nil {
				b.Fatal(err)
			}
		}
	})
}
